"""The render process's side: load a render, draw what the fit sends, repeat.

Started by :class:`autofit_jaxviz.render.process.RenderProcess` as a fresh
interpreter (``python -c``) that never imports the user's main module; the
render arrives by value (:mod:`.serialize`). One process serves one fit at a
time and, after it, the next fit of the same interpreter (a pipeline): each
``load`` applies that fit's parent state first, then replaces the render.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from autofit_jaxviz.render.parent_state import ParentState
from autofit_jaxviz.render.serialize import deserialize


class Message:
    """What the parent sends (first item of a tuple) and what the child answers."""

    LOAD = "load"  # (LOAD, state, buffer sizes) + head bytes + each buffer's raw bytes
    RENDER = "render"  # (RENDER,) + the payload's bytes
    DROP = "drop"  # (DROP,): the fit is over, forget its render (no answer)
    READY = "ready"  # (READY, notes)
    LOAD_FAILED = "load-failed"  # (LOAD_FAILED, traceback)
    OK = "ok"  # every render answer is (status, value, cpu seconds, wall seconds)
    ERROR = "error"
    NOT_IMPLEMENTED = "not-implemented"


#: Variables the render process always sets for itself, whatever the parent has.
CHILD_ENVIRON = {"MPLBACKEND": "Agg"}
#: ...and those it sets only where the parent did not: a render process that
#: uses JAX on a GPU must not take 75% of the device's memory from the sampler.
CHILD_ENVIRON_DEFAULTS = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def _load(conn: Connection, state: ParentState, sizes: list[int]) -> tuple[Any, list[str]]:
    head = conn.recv_bytes()
    buffers = []
    with open(conn.fileno(), "rb", buffering=0, closefd=False) as raw:
        for size in sizes:
            # writable (an analysis may change its arrays in place), and read
            # straight into: one copy of the data in this process
            buffer = bytearray(size)
            view, done = memoryview(buffer), 0
            while done < size:
                got = raw.readinto(view[done:])
                if not got:
                    raise EOFError("the parent went away while sending the render")
                done += got
            buffers.append(buffer)
    notes = state.apply(environ_overrides=CHILD_ENVIRON, environ_defaults=CHILD_ENVIRON_DEFAULTS)
    render = deserialize(head, buffers)
    del head, buffers
    if "matplotlib" in sys.modules:  # imported by the render: still Agg
        import matplotlib

        matplotlib.use("Agg", force=True)
    notes += state.apply_after_load()
    warm_up = getattr(render, "warm_up", None)
    if callable(warm_up):  # optional: the first picture's imports, paid before it is due
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - an optimisation only; the render will say what is wrong
            pass
    return render, notes


def serve(conn: Connection) -> None:
    """Answer the parent's messages until it says stop or goes away."""
    render: Callable[[Any], Any] | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone: never outlive it
        if message is None:
            return
        kind = message[0]
        if kind == Message.LOAD:
            render = None
            gc.collect()  # the previous fit's data, before the next one arrives
            try:
                render, notes = _load(conn, message[1], message[2])
            except BaseException as error:  # noqa: BLE001
                conn.send((Message.LOAD_FAILED, "".join(traceback.format_exception(error))))
                continue
            conn.send((Message.READY, notes))
        elif kind == Message.DROP:
            render = None
            gc.collect()
        elif kind == Message.RENDER:
            conn.send(_draw(render, conn.recv_bytes()))


def _draw(render: Callable[[Any], Any] | None, data: bytes) -> tuple[str, Any, float, float]:
    """Draw one payload; the answer carries this process's CPU and wall seconds
    for it, so the parent's render budget counts the core time the picture took,
    not the time a niced process spent waiting for a core."""
    cpu, wall = time.process_time(), time.perf_counter()
    status, result = _draw_payload(render, data)
    return status, result, time.process_time() - cpu, time.perf_counter() - wall


def _draw_payload(render: Callable[[Any], Any] | None, data: bytes) -> tuple[str, Any]:
    if render is None:
        return Message.ERROR, "no render loaded"
    try:
        result = render(pickle.loads(data))  # noqa: S301 - our parent's bytes
    except NotImplementedError:
        return Message.NOT_IMPLEMENTED, None
    except BaseException as error:  # noqa: BLE001
        return Message.ERROR, "".join(traceback.format_exception(error))
    try:
        pickle.dumps(result)
    except Exception:  # noqa: BLE001 - an unpicklable result is not worth failing over
        result = None
    return Message.OK, result


def main() -> None:
    """Entry point: ``argv`` is the socket's descriptor and the niceness increment."""
    fd, niceness = int(sys.argv[1]), int(sys.argv[2])
    # Ctrl-C in a terminal reaches the whole process group: the sampler stops,
    # but the render of the final best fit must still be allowed to finish.
    # The parent ends this process (stop message, socket closed, kill).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError:  # not permitted here: render at the sampler's priority
            pass
    serve(Connection(fd))
    # Everything drawn is written and closed: skip the interpreter's teardown
    # (matplotlib, the analysis's modules), which the fit would otherwise wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
