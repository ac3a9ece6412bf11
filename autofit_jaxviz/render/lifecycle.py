"""Every live worker, at interpreter exit and after ``os.fork``.

As in CPython's ``concurrent.futures.thread``, the lifecycle is part of the
design rather than left to the garbage collector: at exit, JAX's callbacks
still in flight are waited for (``jax.effects_barrier``), then every live
worker draws its final payload and stops, all within one deadline (the longest
``shutdown_timeout`` among them, not the sum; hung ones last), and the idle
render processes kept for a next fit are ended; in a forked child every
worker starts again from fresh locks, since the parent's renderer thread does
not exist there and its locks may have been held at the fork.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util  # noqa: F401 - its exit hook must be registered before ours
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from autofit_jaxviz.device.lazy_jax import effects_barrier

if TYPE_CHECKING:
    from autofit_jaxviz.render.worker import QuickUpdateWorker

logger = logging.getLogger(__name__)

_live_workers: weakref.WeakSet[QuickUpdateWorker] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False


def track(worker: QuickUpdateWorker) -> None:
    """Include ``worker`` in the exit and fork handling (installed with the first one)."""
    global _hooks_installed
    _live_workers.add(worker)
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(shutdown_all)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset_all_after_fork)


def shutdown_all() -> None:
    """Shut every live worker down within one deadline, the longest
    ``shutdown_timeout`` among them counted from now. One after another (no new
    thread can start during interpreter shutdown), the ones with a render
    running longest last, so a hung visualizer does not take the time of a
    worker that is about to draw its final best fit; a worker whose earlier
    shutdown already gave up returns at once."""
    from autofit_jaxviz.render.process import close_render_processes

    workers = list(_live_workers)
    deadline = time.monotonic() + max((w.shutdown_timeout for w in workers), default=5.0)
    if workers:
        effects_barrier()  # callbacks in flight deliver their best fits first
    for worker in sorted(workers, key=lambda w: w.render_running_for()):
        try:
            worker.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:  # pragma: no cover - never let exit crash
            logger.exception("%s: shutdown at interpreter exit failed", worker.name)
    # the render processes kept for a next fit that will not come
    close_render_processes(max(0.5, deadline - time.monotonic()))


def _reset_all_after_fork() -> None:
    for worker in list(_live_workers):
        worker._after_fork_in_child()
