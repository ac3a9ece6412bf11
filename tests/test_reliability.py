"""Reliability: nothing the visualization does may end or corrupt a fit, and the
picture left at the end is of the true final best fit.

One test (parametrized) per row of ``RELIABILITY.md``; rows an existing test
already covers are cited there, not repeated here. Each row runs against both
background backends (``thread``, ``process``) and, where both apply, both ways a
best fit reaches the worker:

``host``
    Python hands each improvement to ``submit`` (a user's own loop; for autofit,
    ``LiveFitness.manage_quick_update``);
``jit``
    a host callback from jitted code (``BestFitTracker`` in a ``lax.scan``; for
    autofit, ``report`` into the fit's ``HostSink``).

"What the user sees at the end" is checked from evidence the render function
leaves beside its picture (and the PNG's own title), never from timing.
Synchronisation uses events, joins and ``flush``.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import autofit as af
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from autofit_helpers import gaussian_data, gaussian_model
from autonerves import conf
from reliability_helpers import (
    Sampler,
    Scribe,
    chain,
    child_pids,
    final_best,
    gone_within,
    png_text,
    read_evidence,
    read_markers,
    resource_tracker_pid,
)

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz import report
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.worker import QuickUpdateWorker

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
JOIN = 60.0  # upper bound for joins and waits; reaching it means a bug, not a slow machine

#: The stress row: this many submits per second, from this many threads, for this long.
STRESS_RATE = 100_000
STRESS_THREADS = 4
STRESS_SECONDS = 10.0
#: Growth of the resident set allowed during the stress run. Keeping every payload
#: alive would cost ~250 MB per million submits.
STRESS_RSS_BUDGET = 64 * 2**20

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["thread", "process"])
def backend(request) -> str:
    return request.param


@pytest.fixture(params=["host", "jit"])
def path(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def segments() -> tuple[np.ndarray, np.ndarray, int]:
    """A 160-step chain in two segments; the second improves on the first, so a
    render attempted during the first is never of the final best fit."""
    params, lls = chain(160, seed=11)
    cut = 60
    assert final_best(lls)[0] >= cut
    return params, lls, cut


@pytest.fixture
def autofit_env(tmp_path, monkeypatch):
    """autofit writing under tmp_path; the library switched off and every fit's
    worker stopped afterwards, whatever the test did."""
    monkeypatch.setattr(conf.instance, "output_path", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)
    logging.getLogger("autofit").setLevel(logging.WARNING)
    yield tmp_path / "output"
    live.disable()
    for hub in list(hub_module.hubs.values()):
        hub.worker.shutdown(5.0)
    hub_module.hubs.clear()


class Leftovers:
    """What existed before a test, to show that it left no thread or process."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.processes = set(multiprocessing.active_children())
        self.children = child_pids()

    def check(self) -> None:
        from autofit_jaxviz.render.process import close_render_processes

        # a render process kept idle for a next fit is by design; anything else is a leak
        close_render_processes()
        # tqdm's monitor (emcee's progress bar, once tqdm is installed) is tqdm's, not ours
        threads = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()
                   and type(t).__name__ != "TMonitor"]
        assert threads == [], f"threads left behind: {threads}"
        processes = set(multiprocessing.active_children()) - self.processes
        assert processes == set(), f"processes left behind: {processes}"
        extra = child_pids() - self.children - {resource_tracker_pid()}
        assert extra == set(), f"child processes left behind: {extra}"


def _logged(record: logging.LogRecord) -> str:
    """A log record's message with its exception (a render process's error
    carries the child's traceback in its text)."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += f"\n{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return text


def _library_records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("autofit_jaxviz") and r.levelno >= level]


def run_scenario(function: str, *, new_session: bool = False, **kwargs):
    """Run ``reliability_helpers.<function>(**kwargs)`` in a fresh interpreter.
    Returns the finished process and the JSON the scenario printed (or None)."""
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]\n"
            "import reliability_helpers\n"
            f"reliability_helpers.{function}(**{kwargs!r})\n")
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, cwd=ROOT, env=env, start_new_session=new_session)
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    return proc, (json.loads(results[-1]) if results else None)


# --------------------------------------------------------------------------- autofit


def _emcee(name: str, **kwargs) -> af.Emcee:
    options = dict(nwalkers=20, nsteps=100, iterations_per_quick_update=200, silence=True,
                   seed=1)
    options.update(kwargs)
    return af.Emcee(name=name, **options)


def _analysis(**kwargs):
    from reliability_helpers import TaggedAnalysis

    data, noise = gaussian_data(seed=kwargs.pop("data_seed", 1))
    return TaggedAnalysis(data=data, noise_map=noise, **kwargs)


def live_fitness(path: str, analysis, model, name: str):
    """autofit's Fitness as this library makes it, with a quick update due on
    every call: host-driven (Emcee) or jitted (BlackJAX NUTS, with a HostSink)."""
    if path == "host":
        search = af.Emcee(name=name, nwalkers=20, nsteps=10, iterations_per_quick_update=1,
                          silence=True)
    else:
        pytest.importorskip("blackjax")
        search = af.BlackJAXNUTS(name=name, num_warmup=5, num_samples=5,
                                 iterations_per_quick_update=1, silence=True)
    fitness = search.make_fitness(analysis=analysis, model=model)
    assert type(fitness).__name__ == "LiveFitness"
    return fitness


class Feed:
    """Hand (vector, log-likelihood) pairs to a LiveFitness as its sampler would:
    ``host`` through ``manage_quick_update`` (a vector or a batch of them), ``jit``
    through ``report`` into the fit's HostSink from jitted code. Waits for the
    render, so each call is one quick update."""

    def __init__(self, path: str, fitness) -> None:
        self.path = path
        self.fitness = fitness
        self.hub = hub_module.hub_for(fitness)
        if path == "jit":
            assert self.hub.sink is not None
            sink = self.hub.sink
            self._emit = jax.jit(lambda v, ll: report(sink, v, ll))

    def __call__(self, vector, log_likelihood) -> None:
        if self.path == "host":
            self.fitness.manage_quick_update(np.asarray(vector, dtype=float),
                                             np.asarray(log_likelihood, dtype=float))
        else:
            self._emit(jnp.asarray(vector, jnp.float32), jnp.asarray(log_likelihood,
                                                                     jnp.float32))
            jax.effects_barrier()
        assert self.hub.worker.flush(JOIN)


def _only_markers(output: Path) -> list[dict]:
    found = read_markers(output)
    assert len(found) == 1, f"expected one fit's markers under {output}, found {list(found)}"
    return next(iter(found.values()))


def _model_results(output: Path) -> str:
    (results,) = list(output.rglob("model.results"))
    return results.read_text()


# =========================================================================== rows

# --------------------------------------------------------------------------- 1. render raises

FAILURES = {
    "raises-every-call": {"fail": "raise"},
    "raises-first-call-only": {"fail_calls": (1,)},
    "not-implemented": {"fail": "not-implemented"},
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failing_render_never_reaches_the_sampler(backend, path, failure, segments, tmp_path,
                                                  caplog):
    params, lls, cut = segments
    scribe = Scribe(tmp_path, tmp_path / "evidence.jsonl", **FAILURES[failure])
    worker = QuickUpdateWorker(scribe, backend=backend, name="failing")
    sampler = Sampler(path, worker)
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz"):
        sampler.run(params[:cut], lls[:cut])
        assert worker.flush(JOIN)  # a render was attempted (and failed) mid-run
        sampler.run(params[cut:], lls[cut:])
        final = sampler.finish()
        assert worker.shutdown(JOIN)
    assert final == final_best(lls)  # the sampler ran to its own end
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    stats = worker.stats
    assert stats.submitted == stats.rendered + stats.failed + stats.superseded
    errors = _library_records(caplog, logging.ERROR)
    if failure == "not-implemented":
        assert evidence == [] and not worker.enabled
        assert (stats.rendered, stats.failed) == (0, 1)  # asked once, never again
        assert errors == []
        infos = [r for r in caplog.records if "NotImplementedError" in r.getMessage()]
        assert len(infos) == 1 and infos[0].levelno == logging.INFO
        return
    assert len(errors) == 1, [_logged(r) for r in errors]  # reported once
    assert "render call 1 failed" in _logged(errors[0])
    if failure == "raises-every-call":
        assert evidence == [] and stats.rendered == 0 and stats.failed >= 2
    else:
        assert stats.failed == 1 and stats.rendered >= 1
        assert evidence[-1]["step"] == final[0]  # nothing lost: the final best is on disk
        assert png_text(scribe.target)["Title"] == f"fit step {final[0]}"


# --------------------------------------------------------------------------- 2. render hangs


def test_hung_render_never_blocks_the_sampler(backend, path, segments, tmp_path, caplog):
    params, lls, cut = segments
    scribe = Scribe(tmp_path, tmp_path / "evidence.jsonl", hang_call=1)
    worker = QuickUpdateWorker(scribe, backend=backend, name="hung")
    try:
        sampler = Sampler(path, worker)
        sampler.run(params[:cut], lls[:cut])
        assert scribe.started.wait(JOIN)  # the first render hangs from here on
        child = worker._process_render.pid if backend == "process" else None
        sampler.run(params[cut:], lls[cut:])
        assert sampler.finish() == final_best(lls)  # the sampler never waited for it
        outcome: list[bool] = []
        closer = threading.Thread(target=lambda: outcome.append(worker.shutdown(0.5)))
        with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
            closer.start()
            closer.join(JOIN)
        assert not closer.is_alive(), "shutdown hung past its timeout"
        assert outcome == [False]  # and says so...
        assert any("timed out" in r.getMessage() for r in caplog.records)  # ...loudly
        assert read_evidence(tmp_path / "evidence.jsonl") == []
        if child is not None:
            assert gone_within(child, JOIN)  # shutdown stopped the hung render process
    finally:
        scribe.release.set()  # a hung renderer *thread* can only be freed, not stopped


@pytest.mark.slow
@pytest.mark.parametrize("shutdown", ["explicit", "implicit"])
def test_hung_render_the_interpreter_still_exits(backend, shutdown, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc, result = run_scenario("exit_scenario", backend=backend, path="host",
                                folder=str(folder), evidence=str(tmp_path / "evidence.jsonl"),
                                shutdown=shutdown, hang=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result is not None, proc.stderr[-3000:]
    assert "Fatal Python error" not in proc.stderr
    assert "shutdown timed out" in proc.stderr  # the user is told why the picture is old
    if shutdown == "explicit":
        assert result["shutdown"] == [False]
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    assert [e["step"] for e in evidence] == [0]  # only the first picture was finished...
    assert png_text(folder / "fit.png")["Title"] == "fit step 0"  # ...and it is whole
    for pid in result["pids"]:
        assert gone_within(pid, JOIN), f"render process {pid} outlived the script"


# --------------------------------------------------------------------------- 3. no valid instance


def _strict_model(invalid: str):
    from reliability_helpers import StrictGaussian

    if invalid == "constructor-raises":
        model = af.Model(StrictGaussian)
        model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
        model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
        model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)
        return model, [50.0, 20.0, -5.0]  # sigma outside the profile's domain
    model = gaussian_model()
    model.add_assertion(model.sigma < model.centre)
    return model, [5.0, 20.0, 30.0]  # violates the assertion


@pytest.mark.parametrize("invalid", ["assertion-fails", "constructor-raises"])
def test_best_fit_that_is_no_valid_instance_is_skipped(backend, path, invalid, autofit_env,
                                                       caplog):
    live.enable(background=True, backend=backend)
    model, bad = _strict_model(invalid)
    fitness = live_fitness(path, _analysis(), model, name=f"invalid_{invalid}")
    feed = Feed(path, fitness)
    with caplog.at_level(logging.ERROR, logger="autofit_jaxviz"):
        feed([50.0, 20.0, 10.0], -100.0)
        feed(bad, -50.0)  # the best so far, and no instance can be built from it
        feed([50.0, 25.0, 10.0], -10.0)
        fitness.shutdown_quick_update()
    markers = _only_markers(autofit_env)
    assert [m["params"] for m in markers] == [[50.0, 20.0, 10.0], [50.0, 25.0, 10.0]]
    errors = _library_records(caplog, logging.ERROR)
    assert len(errors) == 1, [_logged(r) for r in errors]
    expected = "assertions failed" if invalid == "assertion-fails" else "sigma must be > 0"
    assert expected in _logged(errors[0])
    assert feed.hub.worker.stats.failed == 1
    assert "-10.0" in _model_results(autofit_env)  # model.results ends on the final best


# --------------------------------------------------------------------------- 4. NaN and inf


def _vector(k: int) -> list[float]:
    return [40.0 + k, 20.0, 10.0]


def test_non_finite_log_likelihoods_never_become_the_best(backend, path, autofit_env):
    live.enable(background=True, backend=backend)
    fitness = live_fitness(path, _analysis(), gaussian_model(), name="non_finite")
    feed = Feed(path, fitness)
    feed(_vector(1), np.nan)
    feed(_vector(2), -5.0)
    feed(_vector(3), np.inf)
    feed(_vector(4), np.nan)
    feed([_vector(5), _vector(6), _vector(7), _vector(8)],  # one batch of walkers
         [np.nan, np.inf, -1.0, -np.inf])
    feed([_vector(9), _vector(10)], [np.nan, np.nan])
    feed(_vector(11), np.inf)
    feed(_vector(12), -3.0)
    feed(_vector(13), -np.inf)
    fitness.shutdown_quick_update()
    markers = _only_markers(autofit_env)
    assert [m["params"] for m in markers] == [_vector(2), _vector(7)]
    assert feed.hub.best == -1.0
    assert "-1.0" in _model_results(autofit_env)


def test_non_finite_log_likelihoods_in_a_jitted_loop(backend, segments, tmp_path):
    params, lls, _ = segments
    lls = lls.copy()
    best_step, _ = final_best(lls)
    lls[[3, best_step]] = np.nan  # the true best evaluates to NaN: it must not win
    lls[[5, 40]] = np.inf
    lls[[7, 90]] = -np.inf
    scribe = Scribe(tmp_path, tmp_path / "evidence.jsonl")
    worker = QuickUpdateWorker(scribe, backend=backend, name="non-finite")
    sampler = Sampler("jit", worker)
    sampler.run(params, lls)
    final = sampler.finish()
    assert worker.shutdown(JOIN)
    assert final == final_best(lls) and np.isfinite(final[1])
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    assert evidence and all(np.isfinite(e["ll"]) for e in evidence)
    assert evidence[-1]["step"] == final[0]
    assert evidence[-1]["params"] == params[final[0]].tolist()


# --------------------------------------------------------------------------- 5. unwritable output


UNWRITABLE = {
    "disk-full": "No space left on device",
    "folder-is-under-a-file": "Not a directory",
    "folder-removed-mid-run": "No such file or directory",
}


@pytest.mark.parametrize("kind", list(UNWRITABLE))
def test_unwritable_output_is_reported_once_and_the_fit_continues(backend, path, kind, segments,
                                                                  tmp_path, caplog):
    params, lls, cut = segments
    evidence = tmp_path / "evidence.jsonl"
    folder = tmp_path / "out"
    if kind == "folder-is-under-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        folder = tmp_path / "a-file" / "out"  # tests run as root: chmod would not stop us
    else:
        folder.mkdir()
    scribe = Scribe(folder, evidence, fail="enospc" if kind == "disk-full" else None,
                    atomic=kind != "folder-removed-mid-run")
    worker = QuickUpdateWorker(scribe, backend=backend, name="unwritable")
    sampler = Sampler(path, worker)
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        sampler.run(params[:cut], lls[:cut])
        assert worker.flush(JOIN)
        before = read_evidence(evidence)
        if kind == "folder-removed-mid-run":
            assert before  # it worked until the folder went away
            shutil.rmtree(folder)
        for start in range(cut, len(lls), 20):  # several quick updates, each failing
            sampler.run(params[start:start + 20], lls[start:start + 20])
            assert worker.flush(JOIN)
        final = sampler.finish()
        assert worker.shutdown(JOIN)
    assert final == final_best(lls)  # the fit ran to its end
    assert read_evidence(evidence) == before
    stats = worker.stats
    assert stats.failed >= 2
    errors = _library_records(caplog, logging.WARNING)
    assert len(errors) == 1, [_logged(r) for r in errors]  # reported once
    assert UNWRITABLE[kind] in _logged(errors[0])  # saying why


def test_final_best_is_redrawn_after_a_transient_write_failure(backend, path, autofit_env):
    live.enable(background=True, backend=backend)
    analysis = _analysis(fail_calls=(2,))  # the second quick update hits a full disk
    fitness = live_fitness(path, analysis, gaussian_model(), name="transient")
    feed = Feed(path, fitness)
    feed([50.0, 20.0, 10.0], -100.0)
    feed([50.0, 25.0, 10.0], -10.0)  # the final best: its picture fails
    feed([40.0, 25.0, 10.0], -50.0)  # the disk has room again; the fit goes on, no better
    fitness.shutdown_quick_update()
    assert "-10.0" in _model_results(autofit_env)
    markers = _only_markers(autofit_env)
    assert markers[0]["params"] == [50.0, 20.0, 10.0]
    assert markers[-1]["params"] == [50.0, 25.0, 10.0], \
        f"the last picture is of {markers[-1]['params']}, not of the final best fit"


def test_a_final_render_still_running_at_close_is_not_drawn_twice(path, autofit_env, caplog):
    """Closing while the final best is still being drawn (past shutdown_timeout) is
    not a failure of that picture: it must not be queued a second time."""
    started, release = threading.Event(), threading.Event()
    base = type(_analysis())

    class SlowAnalysis(base):
        def perform_quick_update(self, paths, instance):
            if self.quick_calls == 1:  # the second picture: the final best, slow
                started.set()
                assert release.wait(JOIN)
            return super().perform_quick_update(paths, instance)

    live.enable(background=True, backend="thread", shutdown_timeout=0.5)
    data, noise = gaussian_data()
    fitness = live_fitness(path, SlowAnalysis(data=data, noise_map=noise), gaussian_model(),
                           name="slow_close")
    hub = hub_module.hub_for(fitness)
    for step, (vector, log_likelihood) in enumerate([([50.0, 20.0, 10.0], -100.0),
                                                     ([50.0, 25.0, 10.0], -10.0)]):
        if path == "host":
            fitness.manage_quick_update(np.array(vector), np.array(log_likelihood))
        else:
            hub.offer_best(BestFit(log_likelihood, np.array(vector), step))
        if step == 0:
            assert hub.worker.flush(JOIN)  # the first picture is drawn normally
    assert started.wait(JOIN)
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        fitness.shutdown_quick_update()  # gives up after 0.5 s, the render still running
    assert any("timed out" in r.getMessage() for r in caplog.records)
    release.set()
    hub.worker._thread.join(JOIN)
    assert not hub.worker._thread.is_alive()
    markers = _only_markers(autofit_env)
    assert [m["params"] for m in markers] == [[50.0, 20.0, 10.0], [50.0, 25.0, 10.0]]


# --------------------------------------------------------------------------- 6. KeyboardInterrupt


@pytest.mark.slow
def test_keyboard_interrupt_in_a_real_fit(backend, autofit_env, capsys):
    live.enable(background=True, backend=backend)
    analysis = _analysis(interrupt_after=1500)
    before = Leftovers()
    with pytest.raises(KeyboardInterrupt):
        _emcee(f"interrupted_{backend}", nsteps=150, iterations_per_quick_update=300).fit(
            model=gaussian_model(), analysis=analysis)
    assert analysis.evaluations == 1500
    markers = _only_markers(autofit_env)
    assert markers[-1]["params"] == list(analysis.best[1])  # the best fit before Ctrl-C
    assert hub_module.hubs == {}
    before.check()


def test_keyboard_interrupt_in_a_sampler_loop(backend, path, segments, tmp_path):
    params, lls, _ = segments
    before = Leftovers()
    scribe = Scribe(tmp_path, tmp_path / "evidence.jsonl")
    worker = QuickUpdateWorker(scribe, backend=backend, name="interrupted")
    sampler = Sampler(path, worker)
    stop = 100
    with pytest.raises(KeyboardInterrupt):
        with worker:  # the user's cleanup: leaving the block shuts the worker down
            sampler.run(params, lls, interrupt_at=stop)
    assert not worker.enabled
    expected_step, _ = final_best(lls[:stop])
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    assert evidence[-1]["step"] == expected_step  # the last best submitted was drawn
    assert png_text(scribe.target)["Title"] == f"fit step {expected_step}"
    before.check()


@pytest.mark.slow
@pytest.mark.parametrize("backend", [
    "thread",
    "process",  # Ctrl-C reaches the render process too: it must finish the drawing
])
def test_ctrl_c_in_a_terminal_still_draws_the_final_best_fit(backend, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc, result = run_scenario("ctrl_c_scenario", new_session=True, backend=backend,
                                folder=str(folder), evidence=str(tmp_path / "evidence.jsonl"))
    assert result is not None, proc.stderr[-3000:]
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr  # the fit did stop
    assert "Fatal Python error" not in proc.stderr
    assert result["shutdown"] is True
    for pid in result["pids"]:
        assert gone_within(pid, JOIN), f"render process {pid} outlived the script"
    steps = [e["step"] for e in read_evidence(tmp_path / "evidence.jsonl")]
    assert steps[-1:] == [2] and result["stats"]["failed"] == 0, \
        f"pictures drawn: steps {steps}; stats {result['stats']}"
    assert png_text(folder / "fit.png")["Title"] == "fit step 2"


@pytest.mark.slow
def test_second_ctrl_c_during_shutdown_leaves_no_render_process(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc, result = run_scenario("double_interrupt_scenario", folder=str(folder),
                                evidence=str(tmp_path / "evidence.jsonl"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result is not None and result["interrupted"], proc.stderr[-3000:]
    assert not result["child_alive"] and result["alive_children"] == [], \
        f"render process {result['child']} still running after the interrupted shutdown"


# --------------------------------------------------------------------------- 7. interpreter exit


@pytest.mark.slow
@pytest.mark.parametrize("shutdown", ["explicit", "implicit"])
def test_interpreter_exit_with_a_render_in_progress(backend, path, shutdown, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc, result = run_scenario("exit_scenario", backend=backend, path=path,
                                folder=str(folder), evidence=str(tmp_path / "evidence.jsonl"),
                                shutdown=shutdown, hang=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result is not None, proc.stderr[-3000:]
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr
    if shutdown == "explicit":
        assert result["shutdown"] == [True]
    step = result["final"][0]
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    assert evidence[0]["call"] == 1  # the render cut in half by the exit was finished...
    assert evidence[-1]["step"] == step  # ...and the pending final best drawn after it
    assert png_text(folder / "fit.png")["Title"] == f"fit step {step}"  # complete, final
    for pid in result["pids"]:
        assert gone_within(pid, JOIN), f"render process {pid} outlived the script"


# --------------------------------------------------------------------------- 9. stress


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_100k_submits_per_second_from_4_threads(backend, tmp_path, record_property):
    scribe = Scribe(tmp_path, tmp_path / "evidence.jsonl")
    worker = QuickUpdateWorker(scribe, backend=backend, name="stress")
    worker.submit(BestFit(-1.0, np.zeros(3), -1))
    assert worker.flush(JOIN)  # warm: render process started, matplotlib loaded
    batch = 500
    per_thread = int(STRESS_RATE * STRESS_SECONDS) // STRESS_THREADS
    interval = batch * STRESS_THREADS / STRESS_RATE  # seconds between a thread's batches
    refs: list[weakref.ref] = []  # every 1000th payload's parameters
    peak = {"rss": 0, "alive": 0}
    stop = threading.Event()

    def monitor() -> None:
        while not stop.wait(0.05):  # sampling, not synchronisation
            peak["rss"] = max(peak["rss"], _rss())
            peak["alive"] = max(peak["alive"], sum(r() is not None for r in list(refs)))

    def produce(tid: int) -> None:
        barrier.wait()
        start = time.monotonic()
        for b in range(per_thread // batch):
            delay = start + b * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing to the target rate, not synchronisation
            for i in range(b * batch, (b + 1) * batch):
                vector = np.array([tid, i, 0.0])
                if i % 1000 == 0:
                    refs.append(weakref.ref(vector))
                worker.submit(BestFit(float(i), vector, tid * per_thread + i))

    gc.collect()
    base = _rss()
    barrier = threading.Barrier(STRESS_THREADS + 1)
    threads = [threading.Thread(target=produce, args=(t,)) for t in range(STRESS_THREADS)]
    watcher = threading.Thread(target=monitor)
    watcher.start()
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join(JOIN * 5)
        assert not t.is_alive()
    elapsed = time.monotonic() - started
    sentinel = BestFit(0.0, np.full(3, -7.0), -2)  # submitted after every producer joined
    worker.submit(sentinel)
    assert worker.shutdown(JOIN)
    stop.set()
    watcher.join(JOIN)
    total = per_thread * STRESS_THREADS
    stats = worker.stats
    record_property("submits_per_second", round(total / elapsed))
    record_property("renders", stats.rendered)
    record_property("rss_growth_mib", round((peak["rss"] - base) / 2**20, 1))
    assert stats.submitted == total + 2 and stats.failed == 0
    assert stats.rendered + stats.superseded == stats.submitted
    evidence = read_evidence(tmp_path / "evidence.jsonl")
    assert evidence[-1]["step"] == -2  # the final update was not lost
    assert png_text(scribe.target)["Title"] == "fit step -2"
    # bounded: at any moment only the newest payloads were alive, and none is now
    assert peak["alive"] <= STRESS_THREADS + 2, peak
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert peak["rss"] - base < STRESS_RSS_BUDGET, (peak["rss"] - base) / 2**20


# --------------------------------------------------------------------------- 10. pyplot twice


@pytest.mark.slow
def test_full_update_and_quick_update_both_drawing_with_pyplot(backend, autofit_env, caplog):
    import matplotlib.pyplot as plt

    live.enable(background=True, backend=backend)
    analysis = _analysis(draw="pyplot")
    search = _emcee(f"pyplot_{backend}", nsteps=200, iterations_per_quick_update=40,
                    iterations_per_full_update=40, seed=3)
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        result = search.fit(model=gaussian_model(), analysis=analysis)
    assert result.max_log_likelihood_instance is not None
    assert _library_records(caplog, logging.WARNING) == []  # no render failed
    during = [u for u in analysis.full_updates if u[1]]
    assert len(during) >= 3, analysis.full_updates  # full updates ran during the fit
    # the main thread never saw a figure of the quick update's
    assert all(figures == [] for _, _, figures in analysis.full_updates)
    markers = _only_markers(autofit_env)
    assert len(markers) >= 2
    if backend == "thread":  # quick updates were drawn between full updates
        assert min(m["evaluations"] for m in markers) < during[-1][0]
    np.testing.assert_allclose(markers[-1]["params"],
                               result.samples.max_log_likelihood(as_instance=False), rtol=1e-12)
    pictures = list(autofit_env.rglob("*.png"))
    assert {"fit.png", "model_fit.png"} <= {p.name for p in pictures}
    for picture in pictures:
        png_text(picture)  # every picture either thread wrote is whole
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------- 11. two fits


def test_two_workers_at_once_draw_only_their_own_fit(backend, path, tmp_path):
    chains = {"A": chain(150, seed=21), "B": chain(150, seed=22)}
    scribes, workers, samplers = {}, {}, {}
    for tag in chains:
        (tmp_path / tag).mkdir()
        scribes[tag] = Scribe(tmp_path / tag, tmp_path / f"{tag}.jsonl", tag=tag)
        workers[tag] = QuickUpdateWorker(scribes[tag], backend=backend, name=f"fit-{tag}")
        samplers[tag] = Sampler(path, workers[tag])
    barrier = threading.Barrier(len(chains))
    finals, errors = {}, []

    def fit(tag: str) -> None:
        try:
            barrier.wait(JOIN)
            samplers[tag].run(*chains[tag])
            finals[tag] = samplers[tag].finish()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=fit, args=(tag,)) for tag in chains]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert errors == []
    for tag in chains:
        assert workers[tag].shutdown(JOIN)
    pids = set()
    for tag, (params, lls) in chains.items():
        assert finals[tag] == final_best(lls)
        evidence = read_evidence(tmp_path / f"{tag}.jsonl")
        assert evidence[-1]["step"] == finals[tag][0]
        for entry in evidence:  # every picture of this fit is of this fit's own chain
            assert entry["params"] == params[entry["step"]].tolist()
        assert png_text(tmp_path / tag / "fit.png")["Title"] == f"{tag} step {finals[tag][0]}"
        pids |= {entry["pid"] for entry in evidence}
    if backend == "process":
        assert len(pids) == 2 and os.getpid() not in pids  # a render process each


@pytest.mark.slow
@pytest.mark.parametrize("when", ["in-a-row", "at-once"])
def test_two_fits_each_draw_only_their_own(backend, when, autofit_env):
    live.enable(background=True, backend=backend)
    analyses = {tag: _analysis(tag=tag, data_seed=seed) for seed, tag in enumerate("AB", 1)}
    errors, results = [], {}

    def fit(tag: str) -> None:
        try:
            results[tag] = _emcee(f"two_{when}_{tag}", nsteps=80, seed=len(tag)).fit(
                model=gaussian_model(), analysis=analyses[tag])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    if when == "in-a-row":
        fit("A")
        fit("B")
    else:
        threads = [threading.Thread(target=fit, args=(tag,)) for tag in analyses]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN * 2)
    assert errors == []
    found = read_markers(autofit_env)
    assert len(found) == 2
    seen = set()
    for folder, markers in found.items():
        (tag,) = {m["tag"] for m in markers}  # one fit's pictures only, in its own folder
        assert f"two_{when}_{tag}" in str(folder)
        np.testing.assert_allclose(markers[-1]["params"], results[tag].samples.max_log_likelihood(
            as_instance=False), rtol=1e-12)  # the last picture is the fit's result
        assert png_text(folder / "fit.png")["Title"].startswith(f"{tag} ")
        seen.add(tag)
    assert seen == {"A", "B"}
    assert hub_module.hubs == {}


def test_render_processes_started_at_once_keep_their_environment(tmp_path, monkeypatch):
    """Two fits start their render processes at the same moment (two threads).
    The parent's environment must never change under the user's other threads,
    and each child must still draw with Agg whatever the parent asked for.
    (A former version set MPLBACKEND in the parent around each start, unlocked.)"""
    import subprocess
    import types

    from render_helpers import matplotlib_backend

    import autofit_jaxviz.render.process as process_module

    users_backend = "module://backend_the_render_process_must_not_use"
    monkeypatch.setenv("MPLBACKEND", users_backend)
    original = subprocess.Popen
    entered = [threading.Event(), threading.Event()]
    proceed = [threading.Event(), threading.Event()]
    seen_at_launch: list[str | None] = []
    calls = itertools.count()

    def gated(*args, **kwargs):
        k = next(calls)
        entered[k].set()
        assert proceed[k].wait(JOIN)
        seen_at_launch.append(os.environ.get("MPLBACKEND"))
        return original(*args, **kwargs)

    monkeypatch.setattr(process_module, "subprocess", types.SimpleNamespace(
        Popen=gated, DEVNULL=subprocess.DEVNULL, TimeoutExpired=subprocess.TimeoutExpired))
    drawn: list[str] = []
    workers = [QuickUpdateWorker(matplotlib_backend, backend="process", name=f"fit-{i}",
                                 on_rendered=lambda _p, result: drawn.append(result))
               for i in range(2)]
    try:
        first = threading.Thread(target=workers[0].prestart)
        first.start()
        assert entered[0].wait(JOIN)  # fit 0 is inside process.start()
        second = threading.Thread(target=workers[1].prestart)
        second.start()
        assert entered[1].wait(JOIN)  # fit 1 too: the two starts overlap
        assert os.environ["MPLBACKEND"] == users_backend
        proceed[1].set()
        second.join(JOIN)
        proceed[0].set()
        first.join(JOIN)
        assert not first.is_alive() and not second.is_alive()
        assert seen_at_launch == [users_backend, users_backend]
        for worker in workers:
            worker.submit(1)
            assert worker.flush(JOIN)
        assert [d.lower() for d in drawn] == ["agg agg", "agg agg"]
        assert [w.stats.process_starts for w in workers] == [1, 1]
    finally:
        for worker in workers:
            worker.shutdown(JOIN)
    assert os.environ["MPLBACKEND"] == users_backend
