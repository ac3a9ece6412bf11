"""JAX, imported on first use: the package (and its host side) imports without it."""

from __future__ import annotations

import functools
import sys
from types import ModuleType


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


def effects_barrier() -> None:
    """Wait for every host callback JAX has dispatched (JAX issue #19867: a
    program can end before its callbacks ran). A no-op when the program never
    imported JAX; never raises (it runs at the end of a fit and at exit)."""
    jax = sys.modules.get("jax")
    barrier = getattr(jax, "effects_barrier", None)
    if barrier is None:
        return
    try:
        barrier()
    except Exception:  # noqa: BLE001 - JAX already torn down at interpreter exit
        pass
