"""Worker lifecycle at its edges: one deadline at interpreter exit, one message on the pipe."""

from __future__ import annotations

import threading

from render_helpers import Recorder

from autofit_jaxviz.render import lifecycle
from autofit_jaxviz.render.process import ProcessRender


class _Worker:
    """Stands in for a worker: its shutdown uses all the time it is given."""

    def __init__(self, clock: list[float], name: str, timeout: float, running: float) -> None:
        self.clock, self.name, self.shutdown_timeout, self.running = clock, name, timeout, running
        self.given: float | None = None

    def render_running_for(self) -> float:
        return self.running

    def shutdown(self, timeout: float) -> bool:
        self.given = timeout
        self.clock[0] += timeout  # it waited that long for its render
        return False


def test_exit_shuts_workers_down_within_one_deadline_hung_ones_last(monkeypatch):
    """A worker whose render has run for minutes (hung) goes last: the one about
    to draw its final best gets the whole deadline (the longest shutdown_timeout),
    and the exit as a whole takes one deadline, not one per worker."""
    clock = [100.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    hung, healthy = _Worker(clock, "hung", 3.0, running=120.0), _Worker(clock, "ok", 5.0, 0.0)
    monkeypatch.setattr(lifecycle, "_live_workers", [hung, healthy])
    lifecycle.shutdown_all()
    assert (healthy.given, hung.given) == (5.0, 0.0)
    assert clock[0] == 105.0


def test_a_second_shutdown_after_a_hung_render_returns_at_once(tmp_path):
    """The exit hook after an explicit shutdown that timed out: no second wait."""
    from render_helpers import Recorder as _Recorder

    from autofit_jaxviz.render.worker import QuickUpdateWorker

    rec = _Recorder(tmp_path / "r.txt", behaviour="hang")
    worker = QuickUpdateWorker(rec, backend="thread", name="hung")
    worker.submit(1)
    assert rec.started.wait(10)
    assert worker.shutdown(0.2) is False  # gave up on the hung render

    def flush(timeout=None):
        raise AssertionError("the second shutdown waited for the hung render again")

    worker.flush = flush
    assert worker.shutdown(30) is False
    rec.release.set()


class _WatchedConnection:
    """The parent's end of the socket, noting whether each send held the render lock."""

    def __init__(self, conn, render: ProcessRender) -> None:
        self._conn, self._render = conn, render
        self.sends: list[tuple[object, bool]] = []

    def send(self, message):
        self.sends.append((message, self._render._lock.locked()))
        self._conn.send(message)

    def send_bytes(self, data):
        self.sends.append(("bytes", self._render._lock.locked()))
        self._conn.send_bytes(data)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_every_message_to_the_render_process_goes_under_one_lock(tmp_path):
    """The renderer thread's payloads and close()'s message never interleave on
    the socket: each send happens with the render lock held."""
    from autofit_jaxviz.render.child import Message

    render = ProcessRender(Recorder(tmp_path / "r.txt"), name="pipe")
    render.start()
    render(1)  # started and ready
    process = render._process
    watched = _WatchedConnection(process.conn, render)
    process.conn = watched
    done = threading.Event()

    def renders() -> None:
        render(2)
        done.set()

    thread = threading.Thread(target=renders)
    thread.start()
    assert done.wait(60)
    thread.join(10)
    render.close()  # an idle, healthy process: back to the pool, its render dropped
    assert [m for m, _ in watched.sends] == [(Message.RENDER,), "bytes", (Message.DROP,)]
    assert all(locked for _, locked in watched.sends), watched.sends
