"""Behaviour of the latest-only worker, with real threads and real processes.

The behavioural suite runs against both background backends (``thread`` and
``process``). Synchronisation is done with events, joins and ``flush``;
nothing sleeps in the hope that another thread has moved on.
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
from pathlib import Path

import pytest
from render_helpers import Payload, Recorder

from autofit_jaxviz import failure_log as failure_log_module
from autofit_jaxviz.render.worker import QuickUpdateWorker

ROOT = Path(__file__).resolve().parents[1]
JOIN = 60.0  # generous upper bound for joins; reaching it means a bug, not a slow machine


@pytest.fixture(params=["thread", "process"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make(backend, tmp_path):
    """Build a worker of the current backend and a Recorder; shut all down after."""
    made: list[tuple[QuickUpdateWorker, Recorder]] = []

    def factory(name="rec", **recorder_kwargs) -> tuple[QuickUpdateWorker, Recorder]:
        worker_kwargs = {k: recorder_kwargs.pop(k) for k in ("min_interval", "on_rendered",
                                                             "rank") if k in recorder_kwargs}
        rec = Recorder(tmp_path / f"{name}.txt", **recorder_kwargs)
        w = QuickUpdateWorker(rec, backend=backend, name=name, **worker_kwargs)
        made.append((w, rec))
        return w, rec

    yield factory
    for w, rec in made:
        rec.release.set()
        w.shutdown(JOIN)


def test_slow_renderer_draws_first_and_last_only(make):
    w, rec = make(hold_on=0)
    assert w.submit(0)
    assert rec.started.wait(JOIN)
    for i in range(1, 10):
        assert w.submit(i)
    assert w.stats.pending and w.stats.rendering
    rec.release.set()
    assert w.flush(JOIN)
    assert rec.rendered() == [0, 9]
    s = w.stats
    assert (s.submitted, s.rendered, s.superseded, s.failed) == (10, 2, 8, 0)
    assert w.shutdown(JOIN)


def test_on_rendered_gets_payload_and_result(make):
    seen = []
    w, rec = make(on_rendered=lambda p, r: seen.append((p, r)))
    w.submit(21)
    assert w.shutdown(JOIN)
    assert len(seen) == 1 and seen[0][0] == 21
    assert seen[0][1].startswith("rendered 21 in ")


def test_many_concurrent_submitters_keep_order_and_final(make):
    w, rec = make()
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
    rendered = rec.rendered()
    assert rendered[-1] == ("final", 0)
    s = w.stats
    assert s.submitted == n_threads * per_thread + 1
    assert s.rendered == len(rendered)
    assert s.rendered + s.superseded == s.submitted
    for tid in range(n_threads):  # one producer's payloads are drawn in its order
        mine = [i for (t, i) in rendered if t == tid]
        assert mine == sorted(mine)


def test_100k_submits_keep_only_newest_alive_and_memory_flat(make):
    w, rec = make(hold_on=-1)
    refs: list[weakref.ref] = []
    first = Payload(-1)
    refs.append(weakref.ref(first))
    w.submit(first)
    del first
    assert rec.started.wait(JOIN)  # the renderer is now held inside render(first)

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
    assert len(alive) == 1  # the one being rendered; the slot holds #99999
    rec.release.set()
    assert w.flush(JOIN)
    gc.collect()
    assert all(r() is None for r in refs)
    assert rec.rendered() == [-1, 99_999]


def test_exceptions_never_reach_submitter_and_are_rate_limited(make, caplog, monkeypatch):
    monkeypatch.setattr(failure_log_module, "FAILURE_LOG_EVERY", 10)
    monkeypatch.setattr(failure_log_module, "FAILURE_LOG_SECONDS", float("inf"))
    w, rec = make(name="broken", behaviour="raise")
    with caplog.at_level(logging.ERROR, logger="autofit_jaxviz"):
        for i in range(25):
            assert w.submit(i)
            assert w.flush(JOIN)  # one render per payload, so every one fails
    assert w.stats.failed == 25 and w.stats.rendered == 0
    records = [r for r in caplog.records if r.name == "autofit_jaxviz.render.worker"]
    with_traceback = [r for r in records if r.exc_info]
    assert len(with_traceback) == 1
    assert "bad payload 0" in str(with_traceback[0].exc_info[1])
    summaries = [r.getMessage() for r in records if not r.exc_info]
    assert len(summaries) == 2
    assert summaries[0].startswith("broken: 10 more quick-update renders failed")
    assert "bad payload 10" in summaries[0] and "bad payload 20" in summaries[1]
    assert w.shutdown(JOIN)


def test_not_implemented_turns_worker_off_after_one_info_line(make, caplog):
    w, rec = make(behaviour="not-implemented")
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz"):
        assert w.submit(1)
        assert w.flush(JOIN)
        assert not w.enabled
        assert w.submit(2) is False
    assert rec.rendered() == [1]  # called once, never again
    infos = [r for r in caplog.records if "NotImplementedError" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert w.stats.rejected == 1
    assert w.shutdown(JOIN)


def test_hung_render_shutdown_returns_within_its_timeout(make, caplog):
    w, rec = make(name="hung", behaviour="hang")
    w.submit(1)
    assert rec.started.wait(JOIN)
    result: list[bool] = []
    caller = threading.Thread(target=lambda: result.append(w.shutdown(timeout=0.5)))
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        caller.start()
        caller.join(JOIN)
    assert not caller.is_alive(), "shutdown hung past its timeout"
    assert result == [False]
    assert any("timed out" in r.getMessage() for r in caplog.records)


def test_shutdown_is_idempotent_and_rejects_later_submits(make):
    w, rec = make()
    w.submit("a")
    assert w.shutdown(JOIN)
    assert w.shutdown(JOIN)
    assert w.submit("late") is False
    assert rec.rendered() == ["a"]
    assert w.stats.rejected == 1
    assert not w.enabled


def test_shutdown_renders_final_best_fit(make):
    w, rec = make(hold_on=0)
    w.submit(0)
    assert rec.started.wait(JOIN)
    for i in range(1, 50):
        w.submit(i)
    done: list[bool] = []
    closer = threading.Thread(target=lambda: done.append(w.shutdown(JOIN)))
    closer.start()  # shutdown is now waiting on the held render
    rec.release.set()
    closer.join(JOIN)
    assert done == [True]
    assert rec.rendered() == [0, 49]


def test_flush_times_out_while_render_held_then_succeeds(make):
    w, rec = make(hold_on=0)
    w.submit(0)
    assert rec.started.wait(JOIN)
    w.submit(1)
    assert w.flush(timeout=0.05) is False
    rec.release.set()
    assert w.flush(JOIN) is True
    assert rec.rendered() == [0, 1]


def test_flush_with_nothing_submitted_returns_at_once(make):
    w, _ = make()
    assert w.flush(timeout=0)
    assert w.shutdown(JOIN)


def test_flush_skips_min_interval(make):
    w, rec = make(min_interval=3600.0)
    w.submit(0)
    assert w.flush(JOIN)
    w.submit(1)  # would wait an hour without the flush
    assert w.flush(JOIN)
    assert rec.rendered() == [0, 1]


def test_min_interval_holds_newer_payloads_back(make):
    first_done = threading.Event()
    w, rec = make(min_interval=3600.0, on_rendered=lambda p, r: first_done.set())
    w.submit(0)
    assert first_done.wait(JOIN)
    for i in range(1, 5):
        w.submit(i)
    s = w.stats
    assert s.pending and s.rendered == 1  # held by the interval, superseding each other
    assert w.shutdown(JOIN)
    assert rec.rendered() == [0, 4]


def test_context_manager_shuts_down(backend, tmp_path):
    rec = Recorder(tmp_path / "cm.txt")
    with QuickUpdateWorker(rec, backend=backend) as w:
        w.submit(1)
        w.submit(2)
    assert not w.enabled and rec.rendered()[-1] == 2


def test_sync_mode_renders_inside_submit_and_swallows_errors():
    rendered = []

    def render(p):
        if p == "bad":
            raise RuntimeError("boom")
        rendered.append(p)

    w = QuickUpdateWorker(render, backend="sync")
    assert w.submit("a")
    assert rendered == ["a"]
    assert w.submit("bad")
    assert w.stats.failed == 1
    assert w.flush(0) and w.shutdown(JOIN)
    assert w.submit("late") is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "gpu"}, "backend must be one of ('thread', 'process', 'sync'), got 'gpu'"),
        ({"min_interval": -1}, "min_interval must be a number >= 0 seconds, got -1"),
        ({"shutdown_timeout": 0}, "shutdown_timeout must be a number > 0 seconds, got 0"),
        ({"on_rendered": 3}, "on_rendered must be callable or None, got 3"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as info:
        QuickUpdateWorker(print, **kwargs)
    assert str(info.value) == message


def _wait_pid(pid: int) -> int:
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
def test_fork_with_lock_held_gives_child_a_working_worker(make):
    w, rec = make()
    w.submit("parent")
    assert w.flush(JOIN)
    with w._cond:  # the worst moment: the worker's lock is held while forking
        pid = os.fork()
    if pid == 0:  # child
        ok = w.submit("child") and w.flush(30.0) and w.shutdown(30.0)
        os._exit(0 if ok else 3)
    assert _wait_pid(pid) == 0
    assert rec.rendered() == ["parent", "child"]
    assert w.submit("parent again") and w.flush(JOIN)
    assert rec.rendered() == ["parent", "child", "parent again"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_render_child_does_not_deadlock(make):
    w, rec = make(hold_on=0)
    w.submit(0)
    assert rec.started.wait(JOIN)  # the parent's renderer is mid-render
    pid = os.fork()
    if pid == 0:
        ok = w.submit("c") and w.flush(30.0) and w.shutdown(30.0)
        os._exit(0 if ok else 3)
    assert _wait_pid(pid) == 0
    assert rec.rendered() == ["c"]
    rec.release.set()
    assert w.flush(JOIN)
    assert rec.rendered() == ["c", 0]


def test_interpreter_exit_renders_final_payload_without_explicit_shutdown(backend, tmp_path):
    out = tmp_path / "rendered.txt"
    script = textwrap.dedent(
        f"""
        import atexit, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from render_helpers import Recorder
        from autofit_jaxviz import QuickUpdateWorker
        if __name__ == "__main__":
            rec = Recorder({str(out)!r}, hold_on=0)
            w = QuickUpdateWorker(rec, backend={backend!r})
            w.submit(0)
            rec.started.wait(60)  # held mid-draw until the interpreter is exiting
            for i in range(1, 100):
                w.submit(i)
            # atexit runs hooks last-in first-out: this one runs before the worker's
            atexit.register(rec.release.set)
        """
    )
    script_path = tmp_path / "exit_script.py"
    script_path.write_text(script)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(script_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Fatal Python error" not in proc.stderr
    assert out.read_text().splitlines() == ["0", "99"]


def test_a_ranked_slot_never_draws_a_worse_payload_after_a_better_one(make):
    """Two producers: the better fit (5) is drawn; the worse one (3) arriving
    late, while 5 renders and after it, is dropped; an equal rank (a redraw) and
    a final payload are accepted."""
    w, rec = make(hold_on=5, rank=float)
    assert w.submit(1) and w.flush(JOIN)
    assert w.submit(5)
    assert rec.started.wait(JOIN)  # 5 is being drawn
    assert not w.submit(3)  # late and worse: not queued behind it
    rec.release.set()
    assert w.flush(JOIN)
    assert not w.submit(4)
    assert w.submit(5) and w.flush(JOIN)  # the same best again (a redraw after a failure)
    assert w.submit(2, final=True) and w.flush(JOIN)  # the fit's result has the last word
    assert not w.submit(9)  # ...also against a late, better one
    assert rec.rendered() == [1, 5, 5, 2]
    assert w.stats.outranked == 3


def test_an_unrankable_payload_is_drawn_not_raised(make):
    w, rec = make(rank=float)
    assert w.submit(3) and w.flush(JOIN)
    assert w.submit("not a number") and w.flush(JOIN)
    assert rec.rendered() == [3, "not a number"] and w.stats.failed == 0
