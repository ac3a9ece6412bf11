"""JAX, imported on first use: the package (and its host side) imports without it."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any


@functools.cache
def load_jax() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import JAX on first use, so the package imports without it."""
    try:
        import jax
        import jax.numpy as jnp
        from jax import lax
    except ImportError as exc:  # pragma: no cover - exercised only without jax
        raise ImportError(
            "autofit_jaxviz's in-jit hook (BestFitTracker, report) needs JAX; "
            "install it with `pip install jax` (the host-side HostSink works without it)"
        ) from exc
    return jax, jnp, lax


def effects_barrier(timeout: float | None = None) -> bool:
    """Wait for every host callback JAX has dispatched (JAX issue #19867: a
    program can end before its callbacks ran), at most ``timeout`` seconds.
    A no-op when the program never imported JAX; never raises (it runs at the
    end of a fit and at exit). Returns whether the barrier completed."""
    jax = sys.modules.get("jax")
    barrier = getattr(jax, "effects_barrier", None)
    if barrier is None:
        return True
    return _bounded(barrier, timeout, "jax-effects-barrier")


def block_until_ready(tree: Any, timeout: float | None = None) -> bool:
    """``jax.block_until_ready(tree)`` (a run's result), at most ``timeout``
    seconds; never raises. ``effects_barrier`` alone does not wait for a
    ``pmap`` computation still in flight (measured, JAX 0.11.2)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return True
    return _bounded(lambda: jax.block_until_ready(tree), timeout, "jax-block-until-ready")


def _bounded(wait: Callable[[], Any], timeout: float | None, name: str) -> bool:
    """Run ``wait`` for at most ``timeout`` seconds (on a daemon thread when
    bounded); its errors are swallowed. Returns whether it finished."""

    def run() -> None:
        try:
            wait()
        except Exception:  # noqa: BLE001 - JAX torn down at exit, or the run itself failed
            pass

    if timeout is None:
        run()
        return True
    waiter = threading.Thread(target=run, name=name, daemon=True)
    waiter.start()
    waiter.join(max(0.0, timeout))
    return not waiter.is_alive()
