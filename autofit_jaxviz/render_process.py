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

import ast
import io
import logging
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import sys
import threading
import traceback
import types
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from autofit_jaxviz.parent_state import ParentState

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


def unpicklable_part(obj: Any, depth: int = 3) -> str | None:
    """Name the attribute that stops ``obj`` from pickling (``None`` if it pickles).

    Used to say *which* part of an analysis cannot cross to the render process,
    rather than only that something could not.
    """
    try:
        pickle.dumps(obj)
        return None
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
    if depth > 0:
        children: list[tuple[str, Any]] = []
        if hasattr(obj, "__dict__"):
            children += [(f".{k}", v) for k, v in vars(obj).items()]
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            children += [(f"<closure {n}>", c.cell_contents)
                         for n, c in zip(code.co_freevars, closure, strict=False)]
        if isinstance(obj, dict):
            children += [(f"[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, list | tuple):
            children += [(f"[{i}]", v) for i, v in enumerate(obj)]
        for name, child in children:
            inner = unpicklable_part(child, depth - 1)
            if inner is not None:
                return name + (inner if inner.startswith((".", "[", "<")) else f" ({inner})")
    return f"{type(obj).__name__} ({reason})"


# --------------------------------------------------------------------------- __main__

#: Marks the render processes whose parent's ``__main__`` must not be run again.
_WITHOUT_MAIN = " (without __main__)"
_filter_lock = threading.Lock()


def _preparation_filter(original: Callable[[str], dict]) -> Callable[[str], dict]:
    def get_preparation_data(name: str) -> dict:
        data = original(name)
        if name.endswith(_WITHOUT_MAIN):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data._autofit_jaxviz = True  # type: ignore[attr-defined]
    return get_preparation_data


def _install_preparation_filter() -> None:
    """Let a render process start without re-running the user's script.

    ``spawn`` runs the parent's main module again in every child (as
    ``__mp_main__``) so that classes defined there can be unpickled. A fit
    script without an ``if __name__ == "__main__":`` guard (PyAutoFit's
    workspace scripts have none) would then run its whole fit a second time in
    the render process. Processes whose name carries the marker skip that step;
    every other process is left exactly as multiprocessing makes it.
    """
    with _filter_lock:
        current = multiprocessing.spawn.get_preparation_data
        if not getattr(current, "_autofit_jaxviz", False):
            multiprocessing.spawn.get_preparation_data = _preparation_filter(current)


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


class _MainFinder(pickle.Pickler):
    """Pickles into nothing (no copy of a large analysis is kept), noting the
    first class or function from ``__main__``."""

    def __init__(self) -> None:
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.found: str | None = None

    def reducer_override(self, obj: Any) -> Any:
        if self.found is None:
            if isinstance(obj, type | types.FunctionType):
                owner = obj
            else:
                owner = type(obj)
            if getattr(owner, "__module__", None) == "__main__":
                self.found = getattr(owner, "__qualname__", repr(owner))
        return NotImplemented


def needs_main(obj: Any) -> str | None:
    """The name of a class or function from ``__main__`` that ``obj`` refers to, if any."""
    finder = _MainFinder()
    try:
        finder.dump(obj)
    except Exception:  # unpicklable further on: the spawn reports that itself
        pass
    return finder.found


#: Calls a script may make at its top level and still be safe to import again
#: (setting up paths, warnings, logging, a matplotlib backend, JAX flags).
_SET_UP_MODULES = frozenset({"os", "sys", "warnings", "logging", "matplotlib", "jax"})


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _only_set_up_calls(node: ast.AST) -> bool:
    return all(_root_name(call.func) in _SET_UP_MODULES
               for call in ast.walk(node) if isinstance(call, ast.Call))


def _is_main_guard(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, *test.comparators]
    names = {n.id for n in sides if isinstance(n, ast.Name)}
    values = {n.value for n in sides if isinstance(n, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


def _defines_only(node: ast.stmt) -> bool:
    """Imports, definitions, docstrings, plain assignments and set-up calls:
    what is safe to run again when a render process imports the script."""
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef
                  | ast.ClassDef | ast.Pass):
        return True
    if isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign):
        return _only_set_up_calls(node)
    if isinstance(node, ast.If | ast.Try):
        blocks = [node.body, node.orelse]
        if isinstance(node, ast.Try):
            blocks += [node.finalbody, *(h.body for h in node.handlers)]
        return _only_set_up_calls(getattr(node, "test", ast.Pass())) and all(
            _defines_only(inner) for block in blocks for inner in block)
    return False


def source_is_guarded(source: str) -> bool:
    """Whether a script does its work only under ``if __name__ == "__main__":``.

    Conservative: any top-level statement that may do work outside the guard
    (a call other than set-up, a loop, a ``with``) makes it unguarded, because
    importing it in a render process would do that work again.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    guards = [node for node in tree.body if _is_main_guard(node)]
    return bool(guards) and all(_defines_only(node) for node in tree.body
                                if not _is_main_guard(node))


def main_is_guarded() -> bool:
    """:func:`source_is_guarded` for the running main script (``False`` for a notebook)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return source_is_guarded(f.read())
    except OSError:
        return False


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
        self._lock = threading.Lock()
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
        suffix = _WITHOUT_MAIN
        if from_main is not None:
            if not main_is_guarded():
                return self._fall_back(
                    f"the render needs {from_main!r}, defined in __main__ (your script or "
                    "notebook); a render process could only load it by running the script "
                    "again, and the script does work outside an `if __name__ == \"__main__\":` "
                    "guard. Define it in an importable module (or put the script's work under "
                    "the guard) to render in a process")
            suffix = ""  # the guarded script is imported again, as multiprocessing does
        _install_preparation_filter()
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

        Not under the render lock: a hung render must not stop the close.
        """
        self._closed = True
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if conn is not None:
            try:
                conn.send(None)
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
