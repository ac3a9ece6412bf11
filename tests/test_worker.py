"""Behaviour of the latest-only worker, with real threads.

Synchronisation is done with events, joins and ``flush``; nothing sleeps in the
hope that another thread has moved on.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import weakref

import pytest

from autofit_jaxviz import worker as worker_module
from autofit_jaxviz.worker import QuickUpdateWorker

JOIN = 30.0  # generous upper bound for joins; reaching it means a bug, not a slow machine


class Gate:
    """A render function that records payloads and can be held mid-render."""

    def __init__(self, hold_first: bool = True) -> None:
        self.rendered: list[object] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        self.calls = 0

    def __call__(self, payload: object) -> str:
        self.calls += 1
        if self.hold_first and self.calls == 1:
            self.started.set()
            assert self.release.wait(JOIN), "test never released the gate"
        self.rendered.append(payload)
        return f"rendered {payload}"


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.release.set()


def test_slow_renderer_draws_first_and_last_only(gate):
    w = QuickUpdateWorker(gate)
    assert w.submit(0)
    assert gate.started.wait(JOIN)
    for i in range(1, 10):
        assert w.submit(i)
    assert w.stats.pending and w.stats.rendering
    gate.release.set()
    assert w.flush(JOIN)
    assert gate.rendered == [0, 9]
    s = w.stats
    assert (s.submitted, s.rendered, s.superseded, s.failed) == (10, 2, 8, 0)
    assert w.shutdown(JOIN)


def test_on_rendered_gets_payload_and_result():
    seen = []
    w = QuickUpdateWorker(lambda p: p * 2, on_rendered=lambda p, r: seen.append((p, r)))
    w.submit(21)
    assert w.shutdown(JOIN)
    assert seen == [(21, 42)]


def test_many_concurrent_submitters_keep_order_and_final():
    rendered: list[tuple[int, int]] = []
    w = QuickUpdateWorker(rendered.append)
    n_threads, per_thread = 8, 5000
    barrier = threading.Barrier(n_threads)

    def produce(tid: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            w.submit((tid, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive()
    w.submit(("final", 0))
    assert w.shutdown(JOIN)
    assert rendered[-1] == ("final", 0)
    s = w.stats
    assert s.submitted == n_threads * per_thread + 1
    assert s.rendered == len(rendered)
    assert s.rendered + s.superseded == s.submitted
    for tid in range(n_threads):  # one producer's payloads are drawn in its order
        mine = [i for (t, i) in rendered if t == tid]
        assert mine == sorted(mine)


class Payload:
    __slots__ = ("i", "__weakref__")

    def __init__(self, i: int) -> None:
        self.i = i


def test_100k_submits_keep_only_newest_alive_and_memory_flat(gate):
    w = QuickUpdateWorker(lambda p: gate(p.i))
    refs: list[weakref.ref] = []
    first = Payload(-1)
    refs.append(weakref.ref(first))
    w.submit(first)
    del first
    assert gate.started.wait(JOIN)  # the renderer is now held inside render(first)

    tracemalloc.start()
    try:
        for i in range(10_000):
            p = Payload(i)
            refs.append(weakref.ref(p))
            w.submit(p)
        del p
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for i in range(10_000, 100_000):
            w.submit(Payload(i))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 90,000 more payloads kept alive would cost several MB; none may be kept
    assert after - base < 256 * 1024, f"memory grew by {after - base} bytes"
    alive = [r for r in refs if r() is not None]
    assert len(alive) == 1  # the one being rendered; slot holds #99999 (no weakref kept)
    gate.release.set()
    assert w.flush(JOIN)
    gc.collect()
    assert all(r() is None for r in refs)
    assert gate.rendered == [-1, 99_999]
    w.shutdown(JOIN)


def test_exceptions_never_reach_submitter_and_are_rate_limited(caplog, monkeypatch):
    monkeypatch.setattr(worker_module, "FAILURE_LOG_EVERY", 10)
    monkeypatch.setattr(worker_module, "FAILURE_LOG_SECONDS", float("inf"))

    def broken(payload):
        raise ValueError(f"bad payload {payload}")

    w = QuickUpdateWorker(broken, name="broken")
    with caplog.at_level(logging.ERROR, logger="autofit_jaxviz.worker"):
        for i in range(25):
            assert w.submit(i)
            assert w.flush(JOIN)  # one render per payload, so every one fails
    assert w.stats.failed == 25 and w.stats.rendered == 0
    records = [r for r in caplog.records if r.name == "autofit_jaxviz.worker"]
    with_traceback = [r for r in records if r.exc_info]
    assert len(with_traceback) == 1
    assert "bad payload 0" in str(with_traceback[0].exc_info[1])
    summaries = [r.getMessage() for r in records if not r.exc_info]
    assert summaries == [
        "broken: 10 more quick-update renders failed (latest: ValueError: bad payload 10)",
        "broken: 10 more quick-update renders failed (latest: ValueError: bad payload 20)",
    ]
    assert w.shutdown(JOIN)


def test_not_implemented_turns_worker_off_after_one_info_line(caplog):
    calls = []

    def no_quick_update(payload):
        calls.append(payload)
        raise NotImplementedError

    w = QuickUpdateWorker(no_quick_update)
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz.worker"):
        assert w.submit(1)
        assert w.flush(JOIN)
        assert not w.enabled
        assert w.submit(2) is False
    assert calls == [1]
    infos = [r for r in caplog.records if "NotImplementedError" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert w.stats.rejected == 1
    assert w.shutdown(JOIN)


def test_hung_render_shutdown_returns_within_its_timeout(caplog):
    never = threading.Event()
    entered = threading.Event()

    def hang(payload):
        entered.set()
        never.wait()

    w = QuickUpdateWorker(hang, name="hung")
    w.submit(1)
    assert entered.wait(JOIN)
    result: list[bool] = []
    caller = threading.Thread(target=lambda: result.append(w.shutdown(timeout=0.2)))
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.worker"):
        caller.start()
        caller.join(JOIN)
    try:
        assert not caller.is_alive(), "shutdown hung past its timeout"
        assert result == [False]
        assert any("timed out" in r.getMessage() for r in caplog.records)
    finally:
        never.set()


def test_shutdown_is_idempotent_and_rejects_later_submits():
    rendered = []
    w = QuickUpdateWorker(rendered.append)
    w.submit("a")
    assert w.shutdown(JOIN)
    assert w.shutdown(JOIN)
    assert w.submit("late") is False
    assert rendered == ["a"]
    assert w.stats.rejected == 1
    assert not w.enabled


def test_shutdown_renders_final_best_fit(gate):
    w = QuickUpdateWorker(gate)
    w.submit(0)
    assert gate.started.wait(JOIN)
    for i in range(1, 50):
        w.submit(i)
    # release from another thread only once shutdown is already waiting
    releaser = threading.Timer(0, gate.release.set)
    releaser.start()
    assert w.shutdown(JOIN)
    releaser.join(JOIN)
    assert gate.rendered[-1] == 49


def test_flush_times_out_while_render_held_then_succeeds(gate):
    w = QuickUpdateWorker(gate)
    w.submit(0)
    assert gate.started.wait(JOIN)
    w.submit(1)
    assert w.flush(timeout=0.05) is False
    gate.release.set()
    assert w.flush(JOIN) is True
    assert gate.rendered == [0, 1]
    w.shutdown(JOIN)


def test_flush_with_nothing_submitted_returns_at_once():
    w = QuickUpdateWorker(lambda p: None)
    assert w.flush(timeout=0)
    assert w.shutdown(JOIN)


def test_flush_skips_min_interval():
    rendered = []
    w = QuickUpdateWorker(rendered.append, min_interval=3600.0)
    w.submit(0)
    assert w.flush(JOIN)
    w.submit(1)  # would wait an hour without the flush
    assert w.flush(JOIN)
    assert rendered == [0, 1]
    w.shutdown(JOIN)


def test_min_interval_holds_newer_payloads_back():
    first_done = threading.Event()
    rendered = []
    w = QuickUpdateWorker(rendered.append, min_interval=3600.0,
                          on_rendered=lambda p, r: first_done.set())
    w.submit(0)
    assert first_done.wait(JOIN)
    for i in range(1, 5):
        w.submit(i)
    s = w.stats
    assert s.pending and s.rendered == 1  # held by the interval, superseding each other
    assert w.shutdown(JOIN)
    assert rendered == [0, 4]


def test_sync_mode_renders_inside_submit_and_swallows_errors():
    rendered = []

    def render(p):
        if p == "bad":
            raise RuntimeError("boom")
        rendered.append(p)

    w = QuickUpdateWorker(render, mode="sync")
    assert w.submit("a")
    assert rendered == ["a"]
    assert w.submit("bad")
    assert w.stats.failed == 1
    assert w.flush(0) and w.shutdown(JOIN)
    assert w.submit("late") is False


def test_context_manager_shuts_down():
    rendered = []
    with QuickUpdateWorker(rendered.append) as w:
        w.submit(1)
        w.submit(2)
    assert not w.enabled and rendered[-1] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "process!"}, "mode must be one of ('thread', 'sync'), got 'process!'"),
        ({"min_interval": -1}, "min_interval must be a number >= 0 seconds, got -1"),
        ({"shutdown_timeout": 0}, "shutdown_timeout must be a number > 0 seconds, got 0"),
        ({"on_rendered": 3}, "on_rendered must be callable or None, got 3"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        QuickUpdateWorker(lambda p: None, **kwargs)
    assert str(info.value) == message


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_with_lock_held_gives_child_a_working_worker(tmp_path):
    marker = tmp_path / "child.txt"

    def render(p):
        if os.getpid() != parent:
            marker.write_text(repr(p))

    parent = os.getpid()
    w = QuickUpdateWorker(render)
    w.submit("parent")
    assert w.flush(JOIN)
    with w._cond:  # the worst moment: the worker's lock is held while forking
        pid = os.fork()
    if pid == 0:  # child
        ok = w.submit("child") and w.flush(10.0) and w.shutdown(10.0)
        os._exit(0 if ok else 3)
    status = _wait_pid(pid)
    assert status == 0
    assert marker.read_text() == "'child'"
    assert w.submit("parent again") and w.flush(JOIN)
    w.shutdown(JOIN)


def _wait_pid(pid: int) -> int | None:
    out: list[int] = []
    def reap() -> None:
        out.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    t = threading.Thread(target=reap, daemon=True)
    t.start()
    t.join(JOIN)
    if t.is_alive():
        os.kill(pid, 9)
        t.join(JOIN)
        pytest.fail("forked child deadlocked")
    return out[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_render_child_does_not_deadlock(gate):
    w = QuickUpdateWorker(gate)
    w.submit(0)
    assert gate.started.wait(JOIN)  # the parent's renderer is mid-render
    pid = os.fork()
    if pid == 0:
        rendered = []
        w._render = rendered.append  # the child's own render target
        ok = w.submit("c") and w.flush(10.0) and rendered == ["c"]
        os._exit(0 if ok else 3)
    assert _wait_pid(pid) == 0
    gate.release.set()
    assert w.flush(JOIN)
    w.shutdown(JOIN)


def test_interpreter_exit_renders_final_payload_without_explicit_shutdown(tmp_path):
    out = tmp_path / "rendered.txt"
    script = textwrap.dedent(
        f"""
        import atexit, threading
        from autofit_jaxviz import QuickUpdateWorker
        started, release = threading.Event(), threading.Event()
        def render(p):
            started.set()
            release.wait(60)  # held mid-draw until the interpreter is exiting
            with open({str(out)!r}, "a") as f:
                f.write(f"{{p}}\\n")
        w = QuickUpdateWorker(render)
        w.submit(0)
        started.wait(60)
        for i in range(1, 100):
            w.submit(i)
        # atexit runs hooks last-in first-out: this one runs before the worker's
        atexit.register(release.set)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fatal Python error" not in proc.stderr
    assert out.read_text().splitlines() == ["0", "99"]
