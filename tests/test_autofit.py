"""The library inside real autofit fits: autofit 2026.10.x, its example Gaussian,
real Emcee, Dynesty and BlackJAX NUTS searches with small budgets."""

from __future__ import annotations

import logging
import os
import pickle
import threading

import autofit as af
import numpy as np
import pytest
from autofit_helpers import (
    MarkedAnalysis,
    gaussian_data,
    gaussian_model,
    read_markers,
)
from autonerves import conf

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hooks as hooks_module
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.history import read_index, read_status
from autofit_jaxviz.render.worker import QuickUpdateWorker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def output_and_cleanup(tmp_path, monkeypatch):
    monkeypatch.setattr(conf.instance, "output_path", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)
    logging.getLogger("autofit").setLevel(logging.WARNING)
    yield
    live.disable()


def _emcee(name: str, **kwargs) -> af.Emcee:
    options = dict(nwalkers=20, nsteps=150, iterations_per_quick_update=300, silence=True,
                   seed=1)
    options.update(kwargs)
    return af.Emcee(name=name, **options)


def _analysis(**kwargs) -> MarkedAnalysis:
    data, noise = gaussian_data()
    return MarkedAnalysis(data=data, noise_map=noise, **kwargs)


def test_not_enabled_means_plain_autofit():
    from autofit.non_linear.fitness import Fitness
    from autofit.non_linear.search.execution import SearchExecutionMixin

    original = SearchExecutionMixin.make_fitness
    live.enable()
    assert SearchExecutionMixin.make_fitness is not original
    live.disable()
    assert SearchExecutionMixin.make_fitness is original
    search = _emcee("plain")
    fitness = search.make_fitness(analysis=_analysis(), model=gaussian_model())
    assert type(fitness) is Fitness


def test_version_check_names_found_version_and_minimum(monkeypatch):
    import autofit

    monkeypatch.setattr(autofit, "__version__", "2025.1.1.1")
    with pytest.raises(RuntimeError) as info:
        live.enable()
    message = str(info.value)
    assert "found autofit 2025.1.1.1" in message and ">= 2026.10.26" in message
    assert not live.is_enabled()


def test_a_newer_autofit_with_every_hook_warns_once_and_works(monkeypatch, caplog):
    import autofit

    monkeypatch.setattr(autofit, "__version__", "2027.3.1.1")
    monkeypatch.setattr(hooks_module, "_warned_versions", set())
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
        live.enable()
        live.disable()
        live.enable()
    warnings = [r.getMessage() for r in caplog.records if "newer than" in r.getMessage()]
    assert len(warnings) == 1 and "2027.3.1.1" in warnings[0]
    assert live.is_enabled()


def test_a_missing_hook_fails_naming_it(monkeypatch):
    from autofit.non_linear.fitness import Fitness

    monkeypatch.delattr(Fitness, "shutdown_quick_update")
    with pytest.raises(RuntimeError, match="missing hooks: Fitness.shutdown_quick_update"):
        live.enable()
    assert not live.is_enabled()


def test_bad_setting_fails_at_enable():
    from autofit_jaxviz.config import ConfigError

    with pytest.raises(ConfigError, match="'gpu'"):
        live.enable(backend="gpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_emcee_draws_during_run_and_ends_on_the_best_fit(backend, tmp_path):
    live.enable(background=True, backend=backend)
    analysis = _analysis(wait_for_picture_after=1500)  # past the first quick update (300)
    search = _emcee(f"emcee_{backend}", nsteps=150)
    fitness_seen = []
    original_close = hub_module.Hub.close

    def close(hub, *args):
        fitness_seen.append(hub.worker.stats)
        return original_close(hub, *args)

    hub_module.Hub.close = close
    try:
        result = search.fit(model=gaussian_model(), analysis=analysis)
    finally:
        hub_module.Hub.close = original_close
    markers = read_markers(tmp_path / "output")
    assert len(markers) >= 2
    # drawn while the search was still running (the sampler waited for it)
    assert fitness_seen and fitness_seen[0].rendered >= 1
    final_params = markers[-1][0]
    # the final image is of the maximum-likelihood sample autofit's result names
    # (Emcee's best *evaluated* point may be a rejected proposal, not a sample)
    np.testing.assert_allclose(final_params, result.samples.max_log_likelihood(as_instance=False),
                               rtol=1e-12)
    # a result that differs from the last quick update is drawn by the parent,
    # after the fit, as autofit's own final visuals are
    pids = {pid for _, _, pid in markers[:-1]}
    assert markers[-1][2] in pids | {os.getpid()}
    if backend == "thread":
        assert pids == {os.getpid()}
        # rendered while the sampler was still evaluating
        assert min(evaluations for _, evaluations, _ in markers) < analysis.evaluations
    else:
        assert os.getpid() not in pids and len(pids) == 1
    png = next((tmp_path / "output").rglob("fit.png"))
    assert png.read_bytes().startswith(b"\x89PNG")
    # every picture is in the history, in order, ending on the result's best
    folder = png.parent / "fit_history"
    entries = read_index(folder)
    assert len(entries) == len(markers)
    assert sorted(p.name for p in folder.glob("*.png")) == [e["file"] for e in entries]
    np.testing.assert_allclose(entries[-1]["parameters"], final_params, rtol=1e-12)
    assert (folder / entries[-1]["file"]).read_bytes() == png.read_bytes()
    status = read_status(folder)
    assert status["state"] == "finished" and status["name"] == f"emcee_{backend}"
    assert status["parameter_names"] == ["centre", "normalization", "sigma"]


class FailingAnalysis(MarkedAnalysis):
    """Raises in the likelihood after some evaluations: a fit that fails midway."""

    def log_likelihood_function(self, instance, *args, **kwargs):
        if self.evaluations >= 900:
            raise RuntimeError("the likelihood broke")
        return super().log_likelihood_function(instance, *args, **kwargs)


@pytest.mark.slow
def test_a_fit_that_raises_is_marked_failed_in_its_history(tmp_path):
    live.enable(background=True, backend="thread")
    data, noise = gaussian_data()
    with pytest.raises(RuntimeError, match="the likelihood broke"):
        _emcee("breaks").fit(model=gaussian_model(),
                             analysis=FailingAnalysis(data=data, noise_map=noise))
    folder = next((tmp_path / "output").rglob("fit_history"))
    status = read_status(folder)
    assert status["state"] == "failed"
    assert status["error"] == "RuntimeError: the likelihood broke"
    assert read_index(folder)  # the pictures drawn before it broke are kept


@pytest.mark.slow
def test_a_fit_run_while_an_outer_exception_is_handled_is_not_marked_failed(tmp_path):
    live.enable(background=True, backend="thread")
    try:
        raise KeyError("handled by the user's own except")
    except KeyError:
        _emcee("in_except", nsteps=60).fit(model=gaussian_model(), analysis=_analysis())
    status = read_status(next((tmp_path / "output").rglob("fit_history")))
    assert status["state"] == "finished" and status["error"] is None


@pytest.mark.slow
def test_same_seed_same_samples_with_library_on_and_off():
    def samples(name):
        result = _emcee(name, nsteps=60).fit(model=gaussian_model(), analysis=_analysis())
        return np.asarray(result.samples.parameter_lists)

    off = samples("seeded_off")
    live.enable(background=True)
    on = samples("seeded_on")
    np.testing.assert_array_equal(on, off)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_two_core_pool_draws_global_best_in_the_parent(tmp_path, backend):
    best_dir = tmp_path / "best"
    best_dir.mkdir()
    live.enable(background=True, backend=backend)
    analysis = _analysis(best_dir=str(best_dir))
    result = _emcee("two_cores", number_of_cores=2).fit(model=gaussian_model(),
                                                         analysis=analysis)
    markers = read_markers(tmp_path / "output")
    assert len(markers) >= 2
    (drawn_by,) = {pid for _, _, pid in markers[:-1]}  # one renderer for the whole pool
    assert markers[-1][2] in (drawn_by, os.getpid())  # (the result, drawn after the fit)
    writers = {p.name for p in best_dir.glob("best-*.txt")}
    assert len(writers - {f"best-{os.getpid()}.txt"}) >= 2  # the children evaluated
    assert f"best-{drawn_by}.txt" not in writers - {f"best-{os.getpid()}.txt"}  # no child drew
    assert (drawn_by == os.getpid()) == (backend == "thread")  # else: the render process
    # the last picture is the result's maximum-likelihood sample (autofit's
    # SneakyPool returns results in completion order, so a 2-core Emcee run is
    # not reproducible: the reference is the result, not a replayed chain)
    np.testing.assert_allclose(markers[-1][0], result.samples.max_log_likelihood(
        as_instance=False), rtol=1e-12)


def _dynesty(name: str) -> af.DynestyStatic:
    return af.DynestyStatic(name=name, nlive=20, maxcall=600, iterations_per_quick_update=100,
                            silence=True)


@pytest.fixture
def checkpoints(monkeypatch):
    """Count dynesty's checkpoint saves (each one pickles the sampler and its Fitness)."""
    import dynesty.nestedsamplers
    import dynesty.utils

    saved = []
    original = dynesty.utils.save_sampler

    def save_sampler(sampler, fname):
        saved.append(fname)
        return original(sampler, fname)

    monkeypatch.setattr(dynesty.nestedsamplers, "save_sampler", save_sampler)
    return saved


@pytest.mark.slow
def test_dynesty_checkpoint_fails_with_autofits_own_worker(monkeypatch, checkpoints):
    # the control: the failure this library removes, reproduced with autofit alone
    monkeypatch.setitem(conf.instance["general"]["updates"], "quick_update_background", True)
    with pytest.raises(TypeError, match="pickle '_thread.lock'"):
        _dynesty("dynesty_autofit").fit(model=gaussian_model(), analysis=_analysis())
    assert checkpoints


@pytest.mark.slow
def test_dynesty_checkpoints_with_the_worker_on(tmp_path, monkeypatch, checkpoints):
    # autofit's own background switch on too: ours replaces its thread
    monkeypatch.setitem(conf.instance["general"]["updates"], "quick_update_background", True)
    live.enable(background=True)
    analysis = _analysis()
    result = _dynesty("dynesty_ckpt").fit(model=gaussian_model(), analysis=analysis)
    assert result is not None
    assert checkpoints, "dynesty wrote no checkpoint"
    markers = read_markers(tmp_path / "output")  # the sampling takes ~0.1 s: few are drawn
    np.testing.assert_allclose(markers[-1][0], result.samples.max_log_likelihood(
        as_instance=False), rtol=1e-12)


def test_fitness_pickles_and_a_copy_finds_the_same_worker():
    live.enable(background=True)
    search = _emcee("pickling")
    fitness = search.make_fitness(analysis=_analysis(), model=gaussian_model())
    assert type(fitness).__name__ == "LiveFitness"
    hub = hub_module.hub_for(fitness)
    copy = pickle.loads(pickle.dumps(fitness))
    assert hub_module.hub_for(copy) is hub  # same process: no second worker, no leaked thread
    state = fitness.__getstate__()
    assert not any(isinstance(v, threading.Thread | QuickUpdateWorker)
                   for v in state.values())
    fitness.shutdown_quick_update()
    assert hub_module.hub_for(copy) is None  # the fit is over: nothing starts again


def test_a_copy_restored_by_the_process_running_the_same_fit_joins_its_hub():
    # a Dynesty resume: the checkpoint's fitness (written by an interpreter that
    # was killed) is unpickled by the new interpreter running the same search
    live.enable(background=True)
    search = _emcee("resumed")
    fitness = search.make_fitness(analysis=_analysis(), model=gaussian_model())
    old = pickle.loads(pickle.dumps(fitness))
    old._jaxviz_key = "written-by-a-killed-interpreter"
    assert hub_module.hub_for(old) is hub_module.hub_for(fitness)
    other = _emcee("another_fit").make_fitness(analysis=_analysis(), model=gaussian_model())
    stranger = pickle.loads(pickle.dumps(other))
    stranger._jaxviz_key = "a-fit-this-process-does-not-run"
    other.shutdown_quick_update()
    assert hub_module.hub_for(stranger) is None
    fitness.shutdown_quick_update()


@pytest.mark.slow
def test_visualizer_that_always_raises_does_not_stop_the_fit(tmp_path, caplog):
    live.enable(background=True)
    analysis = _analysis(fail=True)
    with caplog.at_level(logging.ERROR, logger="autofit_jaxviz"):
        result = _emcee("failing", nsteps=80).fit(model=gaussian_model(), analysis=analysis)
    assert result.max_log_likelihood_instance is not None
    errors = [r for r in caplog.records if r.name == "autofit_jaxviz.render.worker"]
    assert errors and "this visualizer always fails" in str(errors[0].exc_info[1])
    # model.results is still written on every quick update
    assert list((tmp_path / "output").rglob("model.results"))


@pytest.mark.slow
def test_blackjax_nuts_draws_during_sampling(tmp_path):
    pytest.importorskip("blackjax")
    live.enable(background=True)
    data, noise = gaussian_data()
    analysis = MarkedAnalysis(data=data, noise_map=noise, use_jax=True)
    rendered_before_close = []
    original_close = hub_module.Hub.close

    def close(hub, *args):
        hub.worker.flush(60)
        rendered_before_close.append(hub.worker.stats)
        return original_close(hub, *args)

    hub_module.Hub.close = close
    try:
        search = af.BlackJAXNUTS(name="nuts", num_warmup=50, num_samples=100, num_chains=2,
                                 iterations_per_quick_update=10, silence=True, seed=2)
        search.fit(model=gaussian_model(), analysis=analysis)
    finally:
        hub_module.Hub.close = original_close
    # improvements reached the worker from inside the jitted sampler, and were
    # drawn, before the search returned (how many are drawn rather than
    # superseded depends on the machine's speed)
    stats = rendered_before_close[0]
    assert stats.submitted >= 3 and stats.rendered >= 2
    markers = read_markers(tmp_path / "output")
    assert len(markers) >= 2


class _PlainAnalysis(af.ex.Analysis):
    """No LiveUpdates: its quick update is not declared safe off the sampler thread."""

    threads: list[str] = []

    def perform_quick_update(self, paths, instance):
        _PlainAnalysis.threads.append(threading.current_thread().name)


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True])
def test_without_both_opt_ins_updates_stay_on_the_sampler_thread(background, caplog):
    _PlainAnalysis.threads = []
    live.enable(background=background)
    data, noise = gaussian_data()
    before = {t.name for t in threading.enumerate()}
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz.autofit"):
        _emcee("plain_sync", nsteps=40).fit(model=gaussian_model(),
                                            analysis=_PlainAnalysis(data=data, noise_map=noise))
    assert _PlainAnalysis.threads and set(_PlainAnalysis.threads) == {"MainThread"}
    assert not [t for t in threading.enumerate() if t.name not in before]
    reasons = [r for r in caplog.records if "synchronously" in r.getMessage()]
    assert len(reasons) == 1
    if background:  # asked for and not granted: say why, loudly
        assert reasons[0].levelno == logging.WARNING
        assert "_PlainAnalysis does not declare supports_background_update" in \
            reasons[0].getMessage()


@pytest.mark.parametrize("asked", [None, "process"])
def test_an_analysis_that_cannot_go_to_a_render_process_is_drawn_in_a_thread(asked, caplog):
    """The default backend is a render process; an analysis it cannot take (here
    one holding a lock) is drawn in a thread, as information when nobody asked
    for the process, as a warning naming the attribute when someone did."""
    live.enable(background=True, backend=asked, notebook_display=False)
    analysis = _analysis()
    analysis.lock = threading.Lock()
    search = _emcee("unpicklable", iterations_per_quick_update=1)
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz"):
        fitness = search.make_fitness(analysis=analysis, model=gaussian_model())
        hub = hub_module.hub_for(fitness)
        fitness.manage_quick_update(np.array([50.0, 25.0, 10.0]), np.array(-10.0))
        assert hub.worker.flush(60)
        fitness.shutdown_quick_update()
    assert hub.worker.stats.rendered >= 1 and hub.worker.stats.process_starts == 0
    said = [r for r in caplog.records if ".lock" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == (logging.INFO if asked is None else logging.WARNING)
    assert "rendering in a thread" in said[0].getMessage()
    assert hub.backend == "thread" == hub.worker.backend
