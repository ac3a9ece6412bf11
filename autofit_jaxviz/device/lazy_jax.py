"""JAX, imported on first use: the package (and its host side) imports without it."""

from __future__ import annotations

import functools
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
