"""JAX, imported on first use: the package (and its host side) imports without it."""

from __future__ import annotations

import functools
import sys
import threading
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


def effects_barrier(timeout: float | None = None) -> bool:
    """Wait for every host callback JAX has dispatched (JAX issue #19867: a
    program can end before its callbacks ran), at most ``timeout`` seconds.
    A no-op when the program never imported JAX; never raises (it runs at the
    end of a fit and at exit). Returns whether the barrier completed."""
    jax = sys.modules.get("jax")
    barrier = getattr(jax, "effects_barrier", None)
    if barrier is None:
        return True

    def wait() -> None:
        try:
            barrier()
        except Exception:  # noqa: BLE001 - JAX already torn down at interpreter exit
            pass

    if timeout is None:
        wait()
        return True
    waiter = threading.Thread(target=wait, name="jax-effects-barrier", daemon=True)
    waiter.start()
    waiter.join(max(0.0, timeout))
    return not waiter.is_alive()
