"""Shared test set-up: keep global JAX settings from leaking between test files.

Importing autofit sets ``JAX_ENABLE_X64=True`` in the environment, which a
*later* first import of JAX obeys; tests of the in-jit hook assume JAX's
default precision. So JAX is imported first, and its precision is restored
after every test (a JAX analysis may switch it on).

A render process a test's fit leaves idle (kept for a next fit of the same
interpreter) is ended after the test, so every test starts without one.
"""

from __future__ import annotations

import sys

import pytest

try:
    import jax  # noqa: F401 - imported before any test imports autofit
except ImportError:  # the package's host side must work without JAX
    pass


@pytest.fixture(autouse=True)
def _restore_jax_precision():
    jax = sys.modules.get("jax")
    before = bool(jax.config.jax_enable_x64) if jax is not None else None
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", False if before is None else before)


@pytest.fixture
def autofit_output(tmp_path, monkeypatch):
    """An autofit fit in a folder of its own (output under ``tmp_path``), with the
    library switched off again afterwards."""
    import logging

    from autonerves import conf

    import autofit_jaxviz.autofit as live

    monkeypatch.setattr(conf.instance, "output_path", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)
    logging.getLogger("autofit").setLevel(logging.WARNING)
    yield
    live.disable()


@pytest.fixture(autouse=True)
def _close_idle_render_processes():
    yield
    from autofit_jaxviz.render.process import close_render_processes

    close_render_processes()
