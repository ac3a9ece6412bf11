"""What only the process backend has: a child that can crash, be restarted,
fail to start, or be orphaned by a parent that dies."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from render_helpers import Recorder

from autofit_jaxviz.render.process import (
    MAX_RESTARTS,
    RENDER_NICENESS,
    close_render_processes,
    render_process_counts,
)
from autofit_jaxviz.render.serialize import serialize, unpicklable_part
from autofit_jaxviz.render.worker import QuickUpdateWorker

ROOT = Path(__file__).resolve().parents[1]
JOIN = 60.0


def _gone_within(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to end (pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def test_render_runs_in_another_process(tmp_path):
    seen = []
    w = QuickUpdateWorker(Recorder(tmp_path / "r.txt"), backend="process",
                          on_rendered=lambda p, r: seen.append(r))
    w.submit(1)
    assert w.flush(JOIN)
    child = w._process_render.pid
    assert child is not None and child != os.getpid()
    assert seen == [f"rendered 1 in {child}"]
    assert w.stats.process_starts == 1
    assert w.shutdown(JOIN)
    assert not _gone_within(child, 0)  # kept for the next fit of this interpreter
    assert close_render_processes(JOIN) == 1
    assert _gone_within(child, JOIN)


def test_child_crash_is_reported_and_replaced(tmp_path, caplog):
    rec = Recorder(tmp_path / "r.txt", exit_on=2)
    w = QuickUpdateWorker(rec, backend="process", name="crashy")
    with caplog.at_level(logging.ERROR, logger="autofit_jaxviz"):
        w.submit(1)
        assert w.flush(JOIN)
        w.submit(2)  # the child dies with os._exit(7) drawing this one
        assert w.flush(JOIN)
        w.submit(3)  # drawn by a fresh child
        assert w.flush(JOIN)
    s = w.stats
    assert (s.rendered, s.failed, s.process_starts, s.process_restarts) == (2, 1, 2, 1)
    assert rec.rendered() == [1, 3]
    assert any("exit code 7" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert w.shutdown(JOIN)


def test_restarts_are_bounded(tmp_path):
    rec = Recorder(tmp_path / "r.txt", exit_on=0)
    w = QuickUpdateWorker(rec, backend="process")
    for _ in range(MAX_RESTARTS + 3):
        assert w.submit(0)
        assert w.flush(JOIN)
    s = w.stats
    assert s.failed == MAX_RESTARTS + 3  # every payload failed, none raised into us
    assert s.process_starts == MAX_RESTARTS + 1  # then it stopped starting new children
    assert w.shutdown(JOIN)


class HoldsALock:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.guard = threading.Lock()

    def __call__(self, payload):
        Path(self.path).write_text(f"{payload} {os.getpid()}")


def test_unpicklable_render_falls_back_to_thread_and_names_the_attribute(tmp_path, caplog):
    render = HoldsALock(tmp_path / "out.txt")
    assert unpicklable_part(render).startswith(".guard")
    w = QuickUpdateWorker(render, backend="process", name="unpicklable")
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.render.process"):
        w.submit(5)
        assert w.flush(JOIN)
        w.submit(6)
        assert w.flush(JOIN)
    assert (tmp_path / "out.txt").read_text() == f"6 {os.getpid()}"  # drawn here
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert ".guard" in warnings[0] and "rendering in a thread instead" in warnings[0]
    assert w.stats.rendered == 2 and w.stats.process_starts == 0
    assert w.shutdown(JOIN)


def test_child_that_cannot_import_the_render_falls_back(tmp_path, caplog):
    # A class from a module that exists only in this process (not __main__, so
    # it is pickled by reference): the render process cannot import it.
    import types

    module = types.ModuleType("only_in_parent")
    exec(textwrap.dedent("""
        class Render:
            def __call__(self, payload):
                return payload
    """), module.__dict__)
    sys.modules["only_in_parent"] = module
    module.Render.__module__ = "only_in_parent"
    try:
        w = QuickUpdateWorker(module.Render(), backend="process", name="nomodule")
        with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.render.process"):
            w.submit(1)
            assert w.flush(JOIN)
        assert w.stats.rendered == 1
        assert any("could not load the render function" in r.getMessage()
                   for r in caplog.records)
        assert w.shutdown(JOIN)
        # what it did not read of the render may still be on its socket: never reused
        assert close_render_processes(JOIN) == 0
    finally:
        del sys.modules["only_in_parent"]


@pytest.mark.slow
def test_parent_killed_leaves_no_render_process(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from render_helpers import Recorder
        from autofit_jaxviz import QuickUpdateWorker
        if __name__ == "__main__":
            w = QuickUpdateWorker(Recorder({str(tmp_path / "r.txt")!r}), backend="process")
            w.submit(1)
            w.flush(60)
            print(w._process_render.pid, flush=True)
            sys.stdin.read()  # wait to be killed
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        child = int(parent.stdout.readline())
        assert not _gone_within(child, 0)
        parent.kill()
        parent.wait(JOIN)
        assert _gone_within(child, JOIN), f"render process {child} outlived its parent"
    finally:
        parent.kill()


def test_no_zombie_after_the_render_processes_are_closed(tmp_path):
    w = QuickUpdateWorker(Recorder(tmp_path / "r.txt"), backend="process")
    w.submit(1)
    assert w.flush(JOIN)
    process = w._process_render._process
    assert w.shutdown(JOIN)
    close_render_processes(JOIN)
    assert process.popen.returncode == 0  # reaped, and it left on the polite request
    assert process.pid not in _child_pids()


def _child_pids() -> set[int]:
    from reliability_helpers import child_pids

    return child_pids()


def test_render_process_yields_the_cpu_to_the_sampler(tmp_path):
    w = QuickUpdateWorker(Recorder(tmp_path / "r.txt"), backend="process")
    try:
        w.submit(1)
        assert w.flush(JOIN)  # the child lowers its priority before it says it is ready
        child = w._process_render.pid
        parent = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, parent + RENDER_NICENESS)
    finally:
        assert w.shutdown(JOIN)


MAIN_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from render_helpers import Recorder
from autofit_jaxviz import QuickUpdateWorker

class RunMarker:  # its body runs whenever this script's top level runs
    with open({runs!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")

class MainRender:  # defined in the script, so only its __main__ knows it
    def __init__(self, path):
        self.path = path
    def __call__(self, payload):
        with open(self.path, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        return os.getpid()

def fit():
    render = MainRender({drawn!r}) if {in_main} else Recorder({drawn!r})
    w = QuickUpdateWorker(render, backend="process", name="script")
    w.submit(1)
    assert w.flush(60)
    assert w.shutdown(60)
    print("FALLBACK" if w.stats.process_starts == 0 else "PROCESS", os.getpid(), flush=True)
"""

GUARDED = 'if __name__ == "__main__":\n    fit()\n'
#: Guarded in name only: the work is done at the top level, the guard holds the rest.
HALF_GUARDED = 'result = fit()\nif __name__ == "__main__":\n    print(result)\n'


@pytest.mark.parametrize("tail", ["fit()\n", GUARDED, HALF_GUARDED])
@pytest.mark.parametrize("in_main", [False, True])
def test_the_users_script_never_runs_twice(tmp_path, tail, in_main):
    # A workspace-style script (no main guard), a guarded one, one guarded in
    # name only; the render a class of the script's own or an importable one:
    # always drawn in a render process, and the script's top level runs once.
    runs, drawn = tmp_path / "runs.txt", tmp_path / "drawn.txt"
    body = MAIN_SCRIPT.format(tests=str(ROOT / "tests"), runs=str(runs), drawn=str(drawn),
                              in_main=in_main)
    script = tmp_path / "fit_script.py"
    script.write_text(body + tail)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=JOIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome, pid = proc.stdout.split()[:2]
    assert outcome == "PROCESS", proc.stderr[-3000:]
    assert runs.read_text().split() == [pid]
    drew_in = drawn.read_text().split()
    assert len(drew_in) == 1 and drew_in[0] != pid


def test_shutdown_while_the_render_process_starts_is_not_a_load_failure(tmp_path, caplog):
    from render_helpers import SlowToLoad

    render = SlowToLoad(tmp_path / "r.txt")
    w = QuickUpdateWorker(render, backend="process", name="starting")
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        w.submit(1)
        assert render.loading.wait(JOIN)  # the child is unpickling the render: not ready
        assert w.shutdown(1.0) is False  # gives up on it and stops the child
        w._thread.join(JOIN)
    assert not w._thread.is_alive()
    assert render.rendered() == []  # nothing drawn in this process after the shutdown
    assert not any("could not load" in r.getMessage() for r in caplog.records)
    assert w.stats.failed == 1 and w.stats.rendered == 0


@pytest.mark.parametrize("fails", [False, True])
def test_render_process_warms_up_before_the_first_render(tmp_path, fails):
    from render_helpers import WarmingRecorder

    w = QuickUpdateWorker(WarmingRecorder(tmp_path / "r.txt", warm_up_fails=fails),
                          backend="process")
    try:
        w.submit(1)
        w.submit(2)
        assert w.flush(JOIN)
        child = w._process_render.pid
        drawn = WarmingRecorder(tmp_path / "r.txt").rendered()
        # once, in the render process, before anything is drawn; a failed warm-up
        # is only a lost optimisation
        assert drawn[0] == f"warm-up in {child}" and drawn[1:] in ([1, 2], [2])
        assert w.stats.failed == 0
    finally:
        assert w.shutdown(JOIN)


def test_autofit_render_warm_up_loads_matplotlib_in_a_fresh_interpreter():
    code = textwrap.dedent("""
        import sys
        from autofit_jaxviz.render.png import warm_up_matplotlib
        assert "matplotlib.backends.backend_agg" not in sys.modules
        assert warm_up_matplotlib() is True
        assert "matplotlib.backends.backend_agg" in sys.modules
        import matplotlib.font_manager as fm
        assert fm.fontManager.ttflist  # fonts found and cached for the first real picture
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=JOIN)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fits_one_after_another_share_one_render_process(tmp_path):
    close_render_processes(JOIN)
    before = render_process_counts()
    children = []
    for fit in range(3):  # a pipeline: one search after another
        w = QuickUpdateWorker(Recorder(tmp_path / f"fit{fit}.txt"), backend="process")
        w.submit(fit)
        assert w.flush(JOIN)
        children.append(w._process_render.pid)
        assert w.shutdown(JOIN)
    after = render_process_counts()
    assert len(set(children)) == 1 and children[0] != os.getpid()
    assert after["started"] - before["started"] == 1
    assert after["reused"] - before["reused"] == 2
    for fit in range(3):  # each fit drew with its own render, nothing left from the last
        assert Recorder(tmp_path / f"fit{fit}.txt").rendered() == [fit]
    assert close_render_processes(JOIN) == 1


def test_fits_at_the_same_time_get_a_render_process_each(tmp_path):
    close_render_processes(JOIN)
    first = QuickUpdateWorker(Recorder(tmp_path / "a.txt"), backend="process")
    second = QuickUpdateWorker(Recorder(tmp_path / "b.txt"), backend="process")
    try:
        for w in (first, second):
            w.submit(1)
            assert w.flush(JOIN)
        assert first._process_render.pid != second._process_render.pid
    finally:
        assert first.shutdown(JOIN) and second.shutdown(JOIN)
        assert close_render_processes(JOIN) == 2


class HoldsArrays:
    """An analysis-sized render: its arrays must cross without a copy in the parent."""

    def __init__(self, path: Path, size: int) -> None:
        import numpy as np

        self.path = str(path)
        self.data = np.arange(size, dtype=np.float64)
        self.noise = np.ones((size // 8, 8))

    def __call__(self, payload):
        self.data[0] += 1.0  # writable in the render process, as in the parent
        total = float(self.data[-1] + self.noise.sum())
        Path(self.path).write_text(f"{total} {os.getpid()}")
        return total


def test_arrays_cross_out_of_band_without_a_copy(tmp_path):
    import numpy as np

    render = HoldsArrays(tmp_path / "out.txt", 1_000_000)
    sent = serialize(render)
    assert len(sent.head) < 10_000  # the pickle stream holds no array data...
    assert sent.nbytes >= render.data.nbytes + render.noise.nbytes
    views = [np.frombuffer(view, dtype=np.float64) for view in sent.buffers]
    # ...the buffers are the arrays' own memory
    assert any(np.shares_memory(v, render.data) for v in views)
    assert any(np.shares_memory(v, render.noise) for v in views)
    w = QuickUpdateWorker(render, backend="process")
    try:
        w.submit(1)
        assert w.flush(JOIN)
        total, pid = (tmp_path / "out.txt").read_text().split()
        assert float(total) == 999_999.0 + 1_000_000 and int(pid) != os.getpid()
        assert w.stats.failed == 0
    finally:
        assert w.shutdown(JOIN)


def test_a_payload_class_from_main_crosses_by_value(tmp_path):
    import __main__

    cls = type("MainPayload", (), {"__module__": "__main__", "__init__":
                                    lambda self, i: setattr(self, "i", i)})
    __main__.MainPayload = cls
    try:
        w = QuickUpdateWorker(Recorder(tmp_path / "r.txt"), backend="process")
        w.submit(cls(4))
        assert w.flush(JOIN)
        assert Recorder(tmp_path / "r.txt").rendered() == [4]
        assert w.shutdown(JOIN)
    finally:
        delattr(__main__, "MainPayload")
