"""Rendering in a separate, spawned process.

A render thread shares the GIL with the sampler: a Python-bound sampler slows
down and the render starves. This module moves the render itself into one
long-lived child process, started with ``spawn`` so it inherits neither the
sampler's threads nor its JAX state.

``ProcessRender`` is a callable that the worker's (thread) renderer calls in
place of the user's render function: it sends the payload down a pipe and
waits for the child's answer with the GIL released. The worker therefore keeps
its whole latest-only contract (one slot, flush, shutdown, stats) unchanged;
only the drawing moves. The render function is pickled and sent **once**, when
the child starts; each update sends only the payload.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from autofit_jaxviz.render.parent_state import ParentState
from autofit_jaxviz.render.sending import (
    WITHOUT_MAIN,
    install_preparation_filter,
    main_is_guarded,
    needs_main,
    unpicklable_part,
)

logger = logging.getLogger(__name__)

#: How many times a crashed child is replaced before the process backend gives up.
MAX_RESTARTS = 3
#: The render process's ``nice`` increment. Where a core is free it changes
#: nothing; where the sampler keeps every core busy (XLA's threads do), the
#: scheduler gives the sampler the CPU and the render waits (BENCHMARKS.md).
RENDER_NICENESS = 10


class RenderProcessError(RuntimeError):
    """The child raised while rendering; carries its formatted traceback."""


class RenderProcessDied(RuntimeError):
    """The child exited (crash, ``os._exit``, out of memory) during a render."""


class RenderCancelled(RuntimeError):
    """The render was cut short because the worker is shutting down."""


class _Reply:
    OK = "ok"
    ERROR = "error"
    NOT_IMPLEMENTED = "not-implemented"
    READY = "ready"


class _SealedRender:
    """The render, pickled while ``spawn`` pickles the process (so
    multiprocessing primitives inside it can cross) but loaded only when the
    child asks: after :class:`ParentState` was applied there, so that, say, a
    float64 JAX array in the analysis arrives as float64."""

    def __init__(self, render: Callable[[Any], Any]) -> None:
        self._render: Callable[[Any], Any] | None = render
        self._data: bytes | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import ForkingPickler

        return _SealedRender._arrived, (bytes(ForkingPickler.dumps(self._render)),)

    @classmethod
    def _arrived(cls, data: bytes) -> _SealedRender:
        sealed = cls.__new__(cls)
        sealed._render, sealed._data = None, data
        return sealed

    def open(self) -> Callable[[Any], Any]:
        if self._render is None:
            self._render = pickle.loads(self._data)  # noqa: S301 - our own parent's bytes
            self._data = None
        return self._render


#: Variables the render process always sets for itself, whatever the parent has.
CHILD_ENVIRON = {"MPLBACKEND": "Agg"}
#: ...and those it sets only where the parent did not: a render process that
#: uses JAX on a GPU must not take 75% of the device's memory from the sampler.
CHILD_ENVIRON_DEFAULTS = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def _child_main(conn: Connection, state: ParentState, sealed: _SealedRender,
                niceness: int = 0) -> None:
    """Entry point of the render process.

    It lives in the library, not in the user's ``__main__``, so a render
    started from a notebook still has an importable target. The parent's state
    (its configuration, working directory, rcParams, JAX options) is applied
    before the render is loaded; what could not be reproduced is reported with
    READY.
    """
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the sampler stops,
    # but the render of the final best fit must still be allowed to finish.
    # The parent ends this process (pipe closed, terminate, kill) when it is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nice = getattr(os, "nice", None)  # POSIX only
    if niceness and nice is not None:
        try:
            nice(niceness)
        except OSError:  # not permitted here: render at the sampler's priority
            pass
    # A non-interactive backend whatever the parent uses, set here rather than
    # in the parent's environment, which other threads may be reading.
    notes = state.apply(environ_overrides=CHILD_ENVIRON,
                        environ_defaults=CHILD_ENVIRON_DEFAULTS)
    render = sealed.open()
    if "matplotlib" in sys.modules:  # imported by the render: still Agg
        import matplotlib

        matplotlib.use("Agg", force=True)
    notes += state.apply_after_load()
    warm_up = getattr(render, "warm_up", None)
    if callable(warm_up):  # optional: the first picture's imports, paid before it is due
        try:
            warm_up()
        except Exception:  # an optimisation only; the render itself will say what is wrong
            pass
    conn.send((_Reply.READY, notes))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone: never outlive it
        if message is None:
            # Asked to stop: everything this process drew is written and
            # closed, so skip the interpreter's teardown (matplotlib, the
            # analysis's modules), which the fit would otherwise wait for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            result = render(message)
        except NotImplementedError:
            conn.send((_Reply.NOT_IMPLEMENTED, None))
            continue
        except BaseException as error:  # noqa: BLE001
            text = "".join(traceback.format_exception(error))
            conn.send((_Reply.ERROR, text))
            continue
        try:
            conn.send((_Reply.OK, result))
        except Exception:
            conn.send((_Reply.OK, None))  # an unpicklable result is not worth failing over


# --------------------------------------------------------------------------- the process


class ProcessRender:
    """A render function that runs in a spawned child process.

    Call it from one thread at a time (the worker's renderer does). The child is
    started on the first call, so a run that never renders pays nothing; a child
    that dies is replaced on the next call, at most ``max_restarts`` times.
    When ``render`` cannot be pickled, this says so once and renders in the
    calling thread instead (the thread backend). The child lowers its own
    priority by ``niceness`` so that it never takes a core the sampler wants.
    """

    def __init__(self, render: Callable[[Any], Any], *, name: str = "quick-update",
                 max_restarts: int = MAX_RESTARTS, niceness: int = RENDER_NICENESS) -> None:
        self._render = render
        # handed over now: what the parent has set up by this point is what
        # the render sees, even if the child is started (or restarted) later
        self.state = ParentState.capture()
        self._state_reported = False
        self.niceness = niceness
        self.name = name
        self.max_restarts = max_restarts
        self.restarts = 0
        self.fallback_reason: str | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one render at a time
        self._send_lock = threading.Lock()  # one message on the pipe at a time
        self._closed = False
        self._ready = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def __call__(self, payload: Any) -> Any:
        if self._closed:
            raise RenderCancelled(f"{self.name}: the render process is closed")
        if self.fallback_reason is not None:
            return self._render(payload)
        with self._lock:
            conn = self._ensure_child()
            if conn is None:
                return self._render(payload)
            try:
                with self._send_lock:
                    conn.send(payload)
                status, value = conn.recv()
            except (EOFError, OSError) as error:
                if self._closed:
                    raise RenderCancelled(f"{self.name}: render stopped by shutdown") from None
                code = self._reap()
                self.restarts += 1
                raise RenderProcessDied(
                    f"{self.name}: the render process died during a render "
                    f"(exit code {code}); restart {self.restarts} of {self.max_restarts}"
                ) from error
        if status == _Reply.OK:
            return value
        if status == _Reply.NOT_IMPLEMENTED:
            raise NotImplementedError
        raise RenderProcessError(f"{self.name}: the render process raised:\n{value}")

    def start(self) -> None:
        """Spawn the child now instead of at the first render.

        For callers that know the process is about to open files under a lock
        (an HDF5 sampler backend, say): a fork-and-exec briefly duplicates every
        open descriptor, so spawning *before* the sampler starts keeps the
        child from ever holding a copy of one. Waiting for the child to be
        ready still happens at the first render, off the calling thread.
        """
        with self._lock:
            if self._process is None and self.fallback_reason is None and not self._closed:
                self._spawn()

    def _ensure_child(self) -> Connection | None:
        if self._process is not None and self._conn is not None and not self._ready:
            return self._await_ready()
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        if self._process is not None:
            self._reap()
        if self.restarts > self.max_restarts:
            raise RenderProcessDied(
                f"{self.name}: the render process died {self.restarts} times; "
                "not restarting it again"
            )
        if self._spawn() is None:
            return None
        return self._await_ready()

    def _spawn(self) -> multiprocessing.process.BaseProcess | None:
        from_main = needs_main(self._render)
        suffix = WITHOUT_MAIN
        if from_main is not None:
            if not main_is_guarded():
                return self._fall_back(
                    f"the render needs {from_main!r}, defined in __main__ (your script or "
                    "notebook); a render process could only load it by running the script "
                    "again, and the script does work outside an `if __name__ == \"__main__\":` "
                    "guard. Define it in an importable module (or put the script's work under "
                    "the guard) to render in a process")
            suffix = ""  # the guarded script is imported again, as multiprocessing does
        install_preparation_filter()
        context = multiprocessing.get_context("spawn")
        parent_conn, child_conn = context.Pipe(duplex=True)
        process = context.Process(
            target=_child_main,
            args=(child_conn, self.state, _SealedRender(self._render), self.niceness),
            name=f"{self.name}-render-process{suffix}",
            daemon=True,  # multiprocessing terminates it at interpreter exit
        )
        try:
            process.start()
        except Exception as error:
            parent_conn.close()
            child_conn.close()
            part = unpicklable_part(self._render) or f"{type(error).__name__}: {error}"
            return self._fall_back(f"the render function cannot be sent to a render process: "
                                   f"{part}")
        child_conn.close()  # so the child's death is seen as EOF here
        self.starts += 1
        self._process, self._conn, self._ready = process, parent_conn, False
        return process

    def _await_ready(self) -> Connection | None:
        conn = self._conn
        try:
            if conn is None:
                raise EOFError
            _, notes = conn.recv()  # READY, sent once the render was loaded (and warmed up)
        except (EOFError, OSError):
            if self._closed:  # shut down while it was starting: not a load failure
                raise RenderCancelled(f"{self.name}: render process stopped while starting") \
                    from None
            code = self._reap()
            if self.starts == 1:
                # it never worked: most likely the child cannot import what the
                # render needs (a class defined in a notebook's __main__, say)
                return self._fall_back(
                    f"the render process could not load the render function (exit code "
                    f"{code}; its error is on stderr)")
            self.restarts += 1
            raise RenderProcessDied(
                f"{self.name}: the render process exited while starting (exit code {code})"
            ) from None
        self._ready = True
        if notes and not self._state_reported:
            self._state_reported = True
            logger.warning("%s: not carried over to the render process (its pictures may "
                           "differ from a thread's): %s", self.name, "; ".join(notes))
        return conn

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        logger.warning("%s: %s; rendering in a thread instead", self.name, reason)
        return None

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's render process without touching it."""
        self._process = self._conn = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    def _reap(self) -> int | None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        return process.exitcode

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: ask politely, then terminate, then kill. Idempotent.

        Not under the render lock: a hung render must not stop the close. Its
        stop message goes under the send lock (so it never interleaves with a
        payload the renderer is still writing); if a send holds the pipe for
        longer than ``timeout``, the child is terminated instead.
        """
        self._closed = True
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if conn is not None:
            try:
                if self._send_lock.acquire(timeout=timeout):
                    try:
                        conn.send(None)
                    finally:
                        self._send_lock.release()
            except (OSError, ValueError):
                pass
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(timeout)
        if conn is not None:
            conn.close()
