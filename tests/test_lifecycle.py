"""Worker lifecycle at its edges: one deadline at interpreter exit, one message on the pipe."""

from __future__ import annotations

import threading

from render_helpers import Recorder

from autofit_jaxviz.render import lifecycle
from autofit_jaxviz.render.process import ProcessRender


class _SlowWorker:
    """Stands in for a worker whose shutdown uses all the time it is given."""

    def __init__(self, clock: list[float], name: str, shutdown_timeout: float) -> None:
        self.clock, self.name, self.shutdown_timeout = clock, name, shutdown_timeout
        self.given: float | None = None

    def shutdown(self, timeout: float) -> bool:
        self.given = timeout
        self.clock[0] += timeout  # it waited that long for a hung render
        return False


def test_exit_shuts_every_worker_down_within_one_deadline(monkeypatch):
    """Two workers with hung renders: the second gets what is left of the one
    deadline (the longest shutdown_timeout), not a full timeout of its own."""
    clock = [100.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    workers = [_SlowWorker(clock, "a", 5.0), _SlowWorker(clock, "b", 3.0)]
    monkeypatch.setattr(lifecycle, "_live_workers", workers)
    lifecycle.shutdown_all()
    assert [w.given for w in workers] == [5.0, 0.0]
    assert clock[0] == 105.0  # the whole exit took one deadline


class _WatchedConnection:
    """The parent's end of the pipe, noting whether each send held the send lock."""

    def __init__(self, conn, render: ProcessRender) -> None:
        self._conn, self._render = conn, render
        self.sends: list[tuple[object, bool]] = []

    def send(self, message):
        self.sends.append((message, self._render._send_lock.locked()))
        self._conn.send(message)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_every_message_to_the_render_process_goes_under_one_lock(tmp_path):
    """The renderer thread's payloads and close()'s stop message never interleave
    on the pipe: each send happens with the send lock held."""
    render = ProcessRender(Recorder(tmp_path / "r.txt"), name="pipe")
    render.start()
    render(1)  # started and ready
    watched = _WatchedConnection(render._conn, render)
    render._conn = watched
    done = threading.Event()

    def renders() -> None:
        render(2)
        done.set()

    thread = threading.Thread(target=renders)
    thread.start()
    assert done.wait(60)
    thread.join(10)
    render.close()
    assert [m for m, _ in watched.sends] == [2, None]
    assert all(locked for _, locked in watched.sends), watched.sends
