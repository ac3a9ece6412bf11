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
        #: the environment of the first fit it loaded: what its interpreter was
        #: set up with (variables read at import, such as XLA_FLAGS, stay)
        self.environ: dict[str, str] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def load(self, state: ParentState, render: SerializedRender) -> None:
        if self.environ is None:
            self.environ = state.environ
        conn = self.conn
        conn.send((Message.LOAD, state, [b.nbytes for b in render.buffers]))
        conn.send_bytes(render.head)
        fd = conn.fileno()
        for buffer in render.buffers:  # raw, from the array's own memory: no copy
            view = buffer.cast("B")
            while view:
                view = view[os.write(fd, view):]

    def close(self, timeout: float, *, polite: bool = True) -> int | None:
        """Stop the child and reap it. Idempotent.

        ``polite``: ask it to stop, and wait, before terminating and killing
        it. Not polite (another thread may be in the middle of a send or a
        receive on the socket): terminate at once, and leave the socket to be
        closed when that thread is done with it (closing a descriptor another
        thread uses could close a file opened meanwhile with the same number).
        """
        stops = [None, self.popen.terminate, self.popen.kill]
        if polite:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        else:
            stops = stops[1:]
        for stop in stops:
            if stop is not None:
                stop()
            try:
                self.popen.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        if polite:
            self.conn.close()
        return self.popen.returncode


# --------------------------------------------------------------------------- the pool

_pool_lock = threading.Lock()
_idle: list[RenderProcess] = []
_pool_pid = os.getpid()
_counts = {"started": 0, "reused": 0}


def _acquire(niceness: int, environ: dict[str, str]) -> tuple[RenderProcess, bool]:
    """An idle render process of this interpreter started for the same
    environment, or a new one; and whether it is new."""
    _check_fork()
    found, stale = None, []
    with _pool_lock:
        for process in list(_idle):
            if not process.alive():
                _idle.remove(process)
                stale.append(process)
            elif found is None and process.niceness == niceness \
                    and process.environ == environ:
                _idle.remove(process)
                found = process
                _counts["reused"] += 1
    for process in stale:  # outside the lock: a fork meanwhile must not inherit it held
        process.close(0.5)
    if found is not None:
        return found, False
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
        _forget_pool_after_fork()


def _forget_pool_after_fork() -> None:
    global _pool_lock, _pool_pid
    _pool_lock = threading.Lock()  # it may have been held at the fork
    for process in _idle:
        process.conn.close()  # our copy of the descriptor only: the child sees EOF
    _idle.clear()                 # when the parent goes, whatever its forks do
    _pool_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


# --------------------------------------------------------------------------- the render


class ProcessRender:
    """A render function that runs in a render process.

    Call it from one thread at a time (the worker's renderer does). The render
    is serialized here, once; a process is taken (or started) on the first
    call, so a run that never renders pays nothing, and one that dies is
    replaced on the next call, at most ``max_restarts`` times, from the same
    serialized render. When the render cannot be serialized or loaded,
    ``fallback_reason`` says why and it renders in the calling thread instead,
    with ``fallback`` (a render made safe for a thread; ``render`` itself by
    default), saying so once: a warning, or information when the process
    was not ``chosen`` but only a default.
    """

    def __init__(self, render: Callable[[Any], Any], *, name: str = "quick-update",
                 max_restarts: int = MAX_RESTARTS, niceness: int = RENDER_NICENESS,
                 fallback: Callable[[Any], Any] | None = None, chosen: bool = True) -> None:
        self._render = fallback if fallback is not None else render
        self._chosen = chosen
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
        self._sent_to: RenderProcess | None = None  # the process the render was sent to
        self._ready = False
        self._state_reported = False
        self._lock = threading.Lock()  # one render at a time
        self._closed = False
        #: (CPU seconds, wall seconds) the render process spent on the last call's
        #: picture; None when the last call did not draw there (see RenderPace)
        self.last_child_times: tuple[float, float] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.alive() else None

    def __call__(self, payload: Any) -> Any:
        self.last_child_times = None
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
                status, value, cpu, wall = process.conn.recv()
            except (EOFError, OSError) as error:
                if self._closed:
                    raise RenderCancelled(f"{self.name}: render stopped by shutdown") from None
                code = self._discard()
                self.restarts += 1
                raise RenderProcessDied(
                    f"{self.name}: the render process died during a render "
                    f"(exit code {code}); restart {self.restarts} of {self.max_restarts}"
                ) from error
        self.last_child_times = (cpu, wall)
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
            if self._process is not None or self._closed:
                return
            try:
                process = self._take_process(load=False)
            except OSError as error:
                self._fall_back(f"no render process could be started ({error})")
                return
        # whoever takes the lock first (this loader or the first render) sends it
        threading.Thread(target=self._load_in_background, args=(process,),
                         name=f"{self.name}-loader", daemon=True).start()

    def _load_in_background(self, process: RenderProcess) -> None:
        with self._lock:
            if self._closed or self._process is not process or self._ready:
                return
            try:
                if self._sent_to is not process:
                    self._send_render(process)
                self._await_ready()
            except Exception:  # noqa: BLE001 - said again at the first render
                logger.debug("%s: the render process did not start", self.name, exc_info=True)

    def _take_process(self, *, load: bool = True) -> RenderProcess:
        process, new = _acquire(self.niceness, self.state.environ)
        self.starts += new
        self._process, self._ready = process, False
        if load:
            self._send_render(process)
        return process

    def _send_render(self, process: RenderProcess) -> None:
        assert self.serialized is not None
        self._sent_to = process
        try:
            process.load(self.state, self.serialized)
        except OSError:  # died at once: seen as EOF when its answer is read
            pass
        self.loads += 1

    def _ensure_child(self) -> RenderProcess | None:
        if self._closed:  # closed while this render waited for the lock
            raise RenderCancelled(f"{self.name}: the render process is closed")
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
        elif self._sent_to is not self._process:  # started by start(), not loaded yet
            self._send_render(self._process)
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
            self._discard()  # what it did not read of the render is still on the socket
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
            logger.log(logging.WARNING if self._chosen else logging.INFO,
                       "%s: %s; rendering in a thread instead", self.name,
                       self.fallback_reason)

    def _discard(self, *, polite: bool = True, timeout: float = 5.0) -> int | None:
        """The process is broken (dead, or hung): end it, never reuse it."""
        process, self._process, self._ready = self._process, None, False
        return process.close(timeout, polite=polite) if process is not None else None

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
                    self._discard(timeout=timeout)  # never became ready
            finally:
                self._lock.release()
            return
        # the renderer holds the socket: no message of ours, terminated at once
        self._discard(polite=False, timeout=timeout)
