"""The parent's state that decides what a render draws and where.

A render process is a fresh interpreter. Without help it would resolve
autofit's output folder from autonerves' *packaged* configuration, draw with
matplotlib's default ``rcParams`` and compute a JAX visualizer in float32,
while the same render on a thread uses whatever the user's script set up. So
the state is captured in the parent when the render is handed over (a later
``conf.instance.push`` before the next search is seen by that search's render)
and applied in the child before the render is loaded:

* the environment variables, ``sys.path`` and the working directory;
* JAX's configuration values (``jax_enable_x64``, ``jax_platforms``, a
  compilation cache folder...), when the parent imported JAX;
* matplotlib's ``rcParams`` (a style, a font, a dpi), except the backend;
* autonerves' configuration search paths and output path, when the parent
  imported autonerves (autofit's paths and visualizers read them on use).

What cannot be carried over is named, so the parent can say it once.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

#: rcParams that belong to the process, not to the picture: the child draws on Agg.
_PROCESS_RCPARAMS = frozenset({"backend", "backend_fallback", "interactive"})
_PLAIN = (bool, int, float, str, type(None))


@dataclass
class ParentState:
    """A picklable snapshot of the parent's drawing-relevant state."""

    cwd: str | None
    environ: dict[str, str]
    sys_path: list[str]
    jax_config: dict[str, Any] | None = None
    rcparams: dict[str, Any] | None = None
    autonerves: tuple[list[str], str, Any] | None = None
    #: settings seen in the parent that this snapshot could not take along
    not_captured: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls) -> ParentState:
        """The state of this process now (cheap: no import, no copy of data)."""
        not_captured: list[str] = []
        try:
            cwd: str | None = os.getcwd()
        except OSError as error:  # the working directory was deleted
            cwd = None
            not_captured.append(f"the working directory ({error})")
        return cls(
            cwd=cwd,
            environ=dict(os.environ),
            sys_path=list(sys.path),
            jax_config=_capture_jax(not_captured),
            rcparams=_capture_rcparams(not_captured),
            autonerves=_capture_autonerves(),
            not_captured=not_captured,
        )

    def apply(self, *, environ_overrides: dict[str, str] | None = None,
              environ_defaults: dict[str, str] | None = None) -> list[str]:
        """Make this (fresh) process match the snapshot, before the render is
        loaded; returns what could not be reproduced. ``environ_overrides``
        win over the parent's variables, ``environ_defaults`` only fill gaps
        (both before JAX or matplotlib is imported here)."""
        notes = list(self.not_captured)
        os.environ.clear()
        os.environ.update(self.environ)
        os.environ.update(environ_overrides or {})
        for key, value in (environ_defaults or {}).items():
            os.environ.setdefault(key, value)
        sys.path[:] = self.sys_path
        if self.cwd is not None:
            try:
                os.chdir(self.cwd)
            except OSError as error:
                notes.append(f"the working directory {self.cwd!r} ({error})")
        if self.jax_config is not None:
            notes += _apply_jax(self.jax_config)
        return notes

    def apply_after_load(self) -> list[str]:
        """Again after the render was loaded: importing a package such as
        autogalaxy registers its own configuration (and may set rcParams),
        which must not take precedence over what the parent had."""
        notes: list[str] = []
        if self.rcparams is not None:
            notes += _apply_rcparams(self.rcparams)
        if self.autonerves is not None:
            notes += _apply_autonerves(*self.autonerves)
        return notes


# --------------------------------------------------------------------------- JAX


def _capture_jax(not_captured: list[str]) -> dict[str, Any] | None:
    jax = sys.modules.get("jax")
    config = getattr(jax, "config", None)
    values = getattr(config, "values", None)
    if not isinstance(values, dict):
        return None  # JAX not imported: the child keeps JAX's defaults, as the parent has
    captured = {}
    for name, value in values.items():
        if isinstance(value, _PLAIN):
            captured[name] = value
        else:  # a device object, say: meaningless in another process
            not_captured.append(f"jax {name}={value!r}")
    return captured


def _apply_jax(values: dict[str, Any]) -> list[str]:
    import jax

    notes = []
    current = jax.config.values
    for name, value in values.items():
        if name in current and current[name] == value:
            continue
        try:
            jax.config.update(name, value)
        except Exception as error:  # noqa: BLE001 - an unknown or frozen option
            notes.append(f"jax {name}={value!r} ({type(error).__name__}: {error})")
    return notes


# --------------------------------------------------------------------------- matplotlib


def _capture_rcparams(not_captured: list[str]) -> dict[str, Any] | None:
    matplotlib = sys.modules.get("matplotlib")
    params = getattr(matplotlib, "rcParams", None)
    if params is None:
        return None  # not imported: the child's defaults are the parent's
    captured = {}
    # the raw values: reading "backend" through rcParams would resolve it,
    # importing pyplot (and maybe a GUI toolkit) in the parent
    for key, value in list(dict.items(params)):
        if key in _PROCESS_RCPARAMS:
            continue
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001
            not_captured.append(f"matplotlib rcParams[{key!r}]={value!r}")
            continue
        captured[key] = value
    return captured


def _apply_rcparams(values: dict[str, Any]) -> list[str]:
    import matplotlib

    notes = []
    params = matplotlib.rcParams
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, value in values.items():
            try:
                if params.get(key) != value:
                    params[key] = value
            except (KeyError, ValueError, TypeError) as error:
                notes.append(f"matplotlib rcParams[{key!r}]={value!r} ({error})")
    return notes


# --------------------------------------------------------------------------- autonerves


def _capture_autonerves() -> tuple[list[str], str, Any] | None:
    conf = sys.modules.get("autonerves.conf")
    instance = getattr(conf, "instance", None)
    if instance is None:
        return None
    # the loaded values too, when autonerves has built them: they hold edits a
    # script or notebook made in memory (conf.instance["visualize"][...] = ...)
    loaded = getattr(instance, "_dict", None)
    try:
        pickle.dumps(loaded)
    except Exception:  # noqa: BLE001 - the files alone, then
        loaded = None
    return [str(path) for path in instance.paths], str(instance.output_path), loaded


def _apply_autonerves(paths: list[str], output_path: str, loaded: Any = None) -> list[str]:
    try:
        from autonerves import conf
        from autonerves.directory_config import RecursiveConfig
    except ImportError as error:
        return [f"autonerves' configuration ({error})"]
    instance = conf.instance
    if [str(path) for path in instance.paths] != paths:
        instance.configs = [RecursiveConfig(path) for path in paths]
    instance.output_path = output_path
    if loaded is not None:
        instance._dict = loaded
    return []
