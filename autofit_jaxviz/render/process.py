"""Rendering in a separate process, one per fitting interpreter.

A render thread shares the GIL with the sampler: a Python-bound sampler slows
down and the render starves. This module moves the drawing into a child
interpreter started with ``subprocess`` (so it inherits neither the sampler's
threads nor its JAX state, and never imports the user's main module: the
render arrives by value, see :mod:`.serialize`).

``ProcessRender`` is a callable that the worker's (thread) renderer calls in
place of the user's render function: it sends the payload down a socket and
waits for the answer with the GIL released, so the worker keeps its whole
latest-only contract. The render is serialized **once**, when it is handed
over; each update sends only the payload. When a fit ends its render process
goes back to a small pool and the next fit of the same interpreter (the next
search of a pipeline) reuses it; the pool is emptied at interpreter exit
(:mod:`.lifecycle`) or by :func:`close_render_processes`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle

from autofit_jaxviz.render.child import Message
from autofit_jaxviz.render.parent_state import ParentState
from autofit_jaxviz.render.serialize import SerializedRender, Unsendable, serialize

logger = logging.getLogger(__name__)

#: How many times a crashed child is replaced before the process backend gives up.
MAX_RESTARTS = 3
#: The render process's ``nice`` increment. Where a core is free it changes
#: nothing; where the sampler keeps every core busy (XLA's threads do), the
#: scheduler gives the sampler the CPU and the render waits (BENCHMARKS.md).
RENDER_NICENESS = 10
#: Idle render processes kept for the next fit (two fits ending together in threads).
MAX_IDLE = 2

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
         "from autofit_jaxviz.render.child import main; main()")


class RenderProcessError(RuntimeError):
    """The child raised while rendering; carries its formatted traceback."""


class RenderProcessDied(RuntimeError):
    """The child exited (crash, ``os._exit``, out of memory) during a render."""


class RenderCancelled(RuntimeError):
    """The render was cut short because the worker is shutting down."""


class RenderProcess:
    """One child interpreter and the socket to it."""

    def __init__(self, niceness: int) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, _PACKAGE_ROOT, str(theirs.fileno()),
                 str(niceness)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # so the child's death is seen as EOF here
        self.conn = Connection(ours.detach())
        self.niceness = niceness

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def load(self, state: ParentState, render: SerializedRender) -> None:
        conn = self.conn
        conn.send((Message.LOAD, state, [b.nbytes for b in render.buffers]))
        conn.send_bytes(render.head)
        for buffer in render.buffers:
            conn.send_bytes(buffer)  # from the array's own memory: no copy

    def close(self, timeout: float, *, polite: bool = True) -> int | None:
        """Ask the child to stop (unless another thread may be writing to it),
        then terminate, then kill; reap it. Idempotent."""
        if polite:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        for stop in (None, self.popen.terminate, self.popen.kill):
            if stop is not None:
                stop()
            try:
                self.popen.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        self.conn.close()
        return self.popen.returncode


# --------------------------------------------------------------------------- the pool

_pool_lock = threading.Lock()
_idle: list[RenderProcess] = []
_pool_pid = os.getpid()
_counts = {"started": 0, "reused": 0}


def _acquire(niceness: int) -> tuple[RenderProcess, bool]:
    """An idle render process of this interpreter, or a new one; and whether it is new."""
    _check_fork()
    with _pool_lock:
        while _idle:
            process = _idle.pop()
            if process.alive() and process.niceness == niceness:
                _counts["reused"] += 1
                return process, False
            process.close(0.5)
    process = RenderProcess(niceness)
    with _pool_lock:
        _counts["started"] += 1
    return process, True


def _release(process: RenderProcess) -> None:
    """A fit is over: keep its (healthy, idle) process for the next fit."""
    _check_fork()
    try:
        process.conn.send((Message.DROP,))
    except (OSError, ValueError):
        process.close(0.5)
        return
    with _pool_lock:
        _idle.append(process)
        extra = _idle[:-MAX_IDLE] if len(_idle) > MAX_IDLE else []
        del _idle[:len(extra)]
    for old in extra:
        old.close(1.0)


def close_render_processes(timeout: float = 5.0) -> int:
    """End the idle render processes now (they otherwise wait, for the next
    fit, until the interpreter exits); returns how many were closed."""
    _check_fork()
    with _pool_lock:
        idle = list(_idle)
        _idle.clear()
    for process in idle:
        process.close(timeout)
    return len(idle)


def render_process_counts() -> dict[str, int]:
    """How many render processes this interpreter ``started``, and how often an
    idle one was ``reused`` by a later fit."""
    with _pool_lock:
        return dict(_counts)


def _check_fork() -> None:
    """In a forked child the pool is the parent's: forget it without touching it."""
    global _pool_pid
    if _pool_pid != os.getpid():
        for process in _idle:
            process.conn.close()  # our copy of the descriptor only
        _idle.clear()
        _pool_pid = os.getpid()


# --------------------------------------------------------------------------- the render


class ProcessRender:
    """A render function that runs in a render process.

    Call it from one thread at a time (the worker's renderer does). The render
    is serialized here, once; a process is taken (or started) on the first
    call, so a run that never renders pays nothing, and one that dies is
    replaced on the next call, at most ``max_restarts`` times, from the same
    serialized render. When the render cannot be serialized or loaded,
    ``fallback_reason`` says why and it renders in the calling thread instead.
    """

    def __init__(self, render: Callable[[Any], Any], *, name: str = "quick-update",
                 max_restarts: int = MAX_RESTARTS, niceness: int = RENDER_NICENESS) -> None:
        self._render = render
        # handed over now: what the parent has set up by this point is what
        # the render sees, even if the child is started (or restarted) later
        self.state = ParentState.capture()
        self.name = name
        self.max_restarts = max_restarts
        self.niceness = niceness
        self.restarts = 0
        self.starts = 0  # render processes started for this render
        self.loads = 0  # times the render was sent to a process
        self.fallback_reason: str | None = None
        self._fallback_logged = False
        self.serialized: SerializedRender | None = None
        try:
            self.serialized = serialize(render)
        except Unsendable as error:
            self.fallback_reason = ("the render function cannot be sent to a render process: "
                                    f"{error.part}")
        self._process: RenderProcess | None = None
        self._ready = False
        self._state_reported = False
        self._lock = threading.Lock()  # one render at a time
        self._closed = False

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.alive() else None

    def __call__(self, payload: Any) -> Any:
        if self._closed:
            raise RenderCancelled(f"{self.name}: the render process is closed")
        if self.fallback_reason is not None:
            self._log_fallback()
            return self._render(payload)
        data = cloudpickle.dumps(payload)  # a payload class from __main__ crosses too
        with self._lock:
            process = self._ensure_child()
            if process is None:
                return self._render(payload)
            try:
                process.conn.send((Message.RENDER,))
                process.conn.send_bytes(data)
                status, value = process.conn.recv()
            except (EOFError, OSError) as error:
                if self._closed:
                    raise RenderCancelled(f"{self.name}: render stopped by shutdown") from None
                code = self._discard()
                self.restarts += 1
                raise RenderProcessDied(
                    f"{self.name}: the render process died during a render "
                    f"(exit code {code}); restart {self.restarts} of {self.max_restarts}"
                ) from error
        if status == Message.OK:
            return value
        if status == Message.NOT_IMPLEMENTED:
            raise NotImplementedError
        raise RenderProcessError(f"{self.name}: the render process raised:\n{value}")

    def start(self) -> None:
        """Take a render process and send it the render now, off the calling thread.

        For callers that know the process is about to open files under a lock
        (an HDF5 sampler backend, say): starting a child briefly duplicates
        open descriptors, so doing it *before* the sampler starts keeps the
        child from ever holding a copy of one; and the render's imports and
        warm-up then run while the sampler starts.
        """
        if self.fallback_reason is not None or self._closed:
            return
        with self._lock:
            if self._process is not None:
                return
            try:
                self._take_process()
            except OSError as error:
                self._fall_back(f"no render process could be started ({error})")
                return
        threading.Thread(target=self._await_in_background, name=f"{self.name}-loader",
                         daemon=True).start()

    def _await_in_background(self) -> None:
        with self._lock:
            if self._closed or self._process is None or self._ready:
                return
            try:
                self._await_ready()
            except Exception:  # noqa: BLE001 - said again at the first render
                logger.debug("%s: the render process did not start", self.name, exc_info=True)

    def _take_process(self) -> RenderProcess:
        process, new = _acquire(self.niceness)
        self.starts += new
        self._process, self._ready = process, False
        assert self.serialized is not None
        try:
            process.load(self.state, self.serialized)
        except OSError:  # died at once: seen as EOF when its answer is read
            pass
        self.loads += 1
        return process

    def _ensure_child(self) -> RenderProcess | None:
        process = self._process
        if process is not None and self._ready:
            if process.alive():
                return process
            self._discard()
        if self._process is None:
            if self.restarts > self.max_restarts:
                raise RenderProcessDied(
                    f"{self.name}: the render process died {self.restarts} times; "
                    "not restarting it again")
            try:
                self._take_process()
            except OSError as error:
                return self._fall_back(f"no render process could be started ({error})")
        return self._await_ready()

    def _await_ready(self) -> RenderProcess | None:
        process = self._process
        assert process is not None
        try:
            status, value = process.conn.recv()  # sent once the render was loaded (and warmed up)
        except (EOFError, OSError):
            if self._closed:  # shut down while it was starting: not a load failure
                raise RenderCancelled(f"{self.name}: render process stopped while starting") \
                    from None
            code = self._discard()
            self.restarts += 1
            raise RenderProcessDied(
                f"{self.name}: the render process exited while starting (exit code {code})"
            ) from None
        if status == Message.LOAD_FAILED:
            self._release()
            last = value.strip().splitlines()[-1] if value.strip() else "unknown error"
            logger.debug("%s: loading the render failed:\n%s", self.name, value)
            return self._fall_back(f"the render process could not load the render function "
                                   f"({last})")
        self._ready = True
        if value and not self._state_reported:
            self._state_reported = True
            logger.warning("%s: not carried over to the render process (its pictures may "
                           "differ from a thread's): %s", self.name, "; ".join(value))
        return process

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self._log_fallback()
        return None

    def _log_fallback(self) -> None:
        if not self._fallback_logged:
            self._fallback_logged = True
            logger.warning("%s: %s; rendering in a thread instead", self.name,
                           self.fallback_reason)

    def _discard(self, *, polite: bool = True) -> int | None:
        """The process is broken (dead, or hung): end it, never reuse it."""
        process, self._process, self._ready = self._process, None, False
        return process.close(5.0, polite=polite) if process is not None else None

    def _release(self) -> None:
        process, self._process, self._ready = self._process, None, False
        if process is not None:
            _release(process)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's render process without touching it."""
        process, self._process = self._process, None
        if process is not None:
            process.conn.close()
        self._lock = threading.Lock()

    def close(self, timeout: float = 5.0) -> None:
        """The fit is over: an idle process goes back to the pool for the next
        fit; one still rendering after ``timeout`` (a hung visualizer) is ended,
        which also frees a renderer thread waiting for it. Idempotent."""
        self._closed = True
        if self._lock.acquire(timeout=timeout):
            try:
                if self._process is not None and self._ready and self._process.alive():
                    self._release()
                else:
                    self._discard()  # never became ready: its load may still be running
            finally:
                self._lock.release()
            return
        self._discard(polite=False)  # the renderer holds the socket: no message of ours
