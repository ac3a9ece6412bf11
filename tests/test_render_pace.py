"""How often and how big quick updates are drawn (issue #16): the render
budget, the preview resolution and the seconds-based cadence."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import autofit as af
import numpy as np
import pytest
from autofit_helpers import MarkedAnalysis, gaussian_data, gaussian_model
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.autofit.render import AutofitRender, ResultFit
from autofit_jaxviz.config import ConfigError, load_settings
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.preview import preview_dpi
from autofit_jaxviz.render.worker import QuickUpdateWorker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
JOIN = 60.0


class KnownCost:
    """A render that keeps its thread busy for ``seconds`` (a known cost)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.drawn: list[object] = []

    def __call__(self, payload: object) -> object:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        self.drawn.append(payload)
        return payload


@pytest.mark.parametrize("budget", [0.2, 0.5])
def test_the_render_budget_holds_on_a_render_of_known_cost(budget):
    render = KnownCost(0.04)
    enough = threading.Event()
    worker: QuickUpdateWorker

    def next_best(payload, _result):  # a newer best is always waiting: the worst case
        if len(render.drawn) >= 8:
            enough.set()
        else:
            worker.submit(payload + 1)

    worker = QuickUpdateWorker(render, render_budget=budget, on_rendered=next_best)
    try:
        worker.submit(0)
        assert enough.wait(JOIN)
        share = worker.stats.render_share
    finally:
        worker.shutdown(JOIN)
    # busy for its budget's share of the time, no more (and not far less: a
    # steady stream of pictures, not one now and then)
    assert budget * 0.6 <= share <= budget * 1.1, share


def test_the_first_render_pays_set_up_and_does_not_hold_the_next_back():
    from autofit_jaxviz.render.pacing import RenderPace

    pace = RenderPace(budget=0.25)
    pace.started(0.0)
    pace.finished(0.0, 9.0)  # imports, fonts, a JAX compile: 9 s once
    assert pace.next_start() <= 9.0  # no 27 s wait for it
    pace.started(9.0)
    pace.finished(9.0, 10.0)  # a steady picture costs 1 s
    assert pace.next_start() == pytest.approx(10.0 + 1.0 * 0.75 / 0.25)
    pace.started(13.0)
    pace.finished(13.0, 14.0)
    pace.started(17.0)
    assert pace.share() == pytest.approx(2.0 / 8.0)  # from the second start, set-up excluded


def test_a_render_process_picture_costs_its_cpu_time_not_its_wait_for_a_core():
    from autofit_jaxviz.render.pacing import RenderPace

    pace = RenderPace(budget=0.25)
    pace.started(0.0)
    pace.finished(0.0, 9.0, (8.5, 8.9))
    pace.started(9.0)
    # 4 s in the parent's call: 3.9 s in the child, of which 1 s on a core
    pace.finished(9.0, 13.0, (1.0, 3.9))
    # 1.1 s of core time in a cycle of 1.1 / 0.25 = 4.4 s from its start
    assert pace.next_start() == pytest.approx(9.0 + (0.1 + 1.0) / 0.25)
    pace.started(20.0)
    pace.finished(20.0, 21.0, (1.5, 0.9))  # a multi-threaded child: more CPU than wall
    assert pace.next_start() == pytest.approx(20.0 + (1.1 + 1.6) / 2 / 0.25)
    pace.started(30.0)
    pace.finished(30.0, 42.0, (0.2, 11.9))  # never before the last one ended
    assert pace.next_start() == pytest.approx(42.0)


def test_the_budget_counts_the_render_process_cpu_time():
    from render_helpers import CoreTime

    from autofit_jaxviz.render.process import ProcessRender

    busy, waiting = ProcessRender(CoreTime(cpu=0.2)), ProcessRender(CoreTime(idle=0.3))
    try:
        assert busy(1) == 1 and waiting(2) == 2
        cpu, wall = busy.last_child_times
        assert cpu >= 0.2 and wall >= cpu * 0.9
        cpu, wall = waiting.last_child_times
        assert wall >= 0.3 and cpu < 0.1
    finally:
        busy.close(JOIN)
        waiting.close(JOIN)
    # pictures that take a process 0.3 s without a core: a budget of wall time
    # would hold rendering to 20% of the time; of core time, they follow each other
    drawn = []
    enough = threading.Event()

    def next_best(payload, _result):
        drawn.append(payload)
        if len(drawn) >= 5:
            enough.set()
        else:
            worker.submit(payload + 1)

    worker = QuickUpdateWorker(CoreTime(idle=0.3), backend="process", render_budget=0.2,
                               on_rendered=next_best)
    try:
        worker.submit(0)
        assert enough.wait(JOIN)
        share = worker.stats.render_share
    finally:
        worker.shutdown(JOIN)
    assert drawn == [0, 1, 2, 3, 4]
    assert share < 0.1, share


def test_without_a_budget_renders_follow_each_other():
    render = KnownCost(0.02)
    enough = threading.Event()

    def next_best(payload, _result):
        if len(render.drawn) >= 5:
            enough.set()
        else:
            worker.submit(payload + 1)

    worker = QuickUpdateWorker(render, on_rendered=next_best)
    worker.submit(0)
    assert enough.wait(JOIN)
    assert worker.stats.render_share > 0.8
    worker.shutdown(JOIN)


def test_the_final_best_is_drawn_when_the_budget_says_wait():
    render = KnownCost(0.1)
    drawn = {k: threading.Event() for k in (0, 1, 2, 3)}
    worker = QuickUpdateWorker(render, render_budget=0.001,  # a pause of ~100 s after each
                               on_rendered=lambda p, _r: drawn[p].set())
    try:
        worker.submit(0)  # the first render does not gate (its cost is set-up)
        assert drawn[0].wait(JOIN)
        worker.submit(1)
        assert drawn[1].wait(JOIN)
        worker.submit(2)  # the budget makes it wait...
        assert worker.flush(JOIN)  # ...but the end of a fit does not
        assert drawn[2].is_set()
        worker.submit(3, final=True)  # nor does a payload marked final
        assert drawn[3].wait(JOIN)
    finally:
        assert worker.shutdown(JOIN)
    assert render.drawn == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, True, "half"])
def test_a_bad_render_budget_for_the_worker_is_rejected(bad):
    with pytest.raises(ValueError, match=rf"render_budget must be .*got {bad!r}"):
        QuickUpdateWorker(print, render_budget=bad)


@pytest.mark.parametrize("key, bad", [
    ("render_budget", 0), ("render_budget", 1.5), ("render_budget", "lots"),
    ("preview_dpi", -10), ("preview_dpi", "high"),
    ("quick_update_seconds", -1), ("quick_update_seconds", float("inf")),
])
def test_bad_pace_settings_are_rejected_naming_key_and_value(key, bad):
    with pytest.raises(ConfigError) as info:
        load_settings(**{key: bad})
    assert f"jaxviz.{key}" in str(info.value) and repr(bad) in str(info.value)


def test_a_bad_pace_setting_from_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("AUTOFIT_JAXVIZ_RENDER_BUDGET", "2")
    with pytest.raises(ConfigError, match="AUTOFIT_JAXVIZ_RENDER_BUDGET.*'2'"):
        load_settings()


# --------------------------------------------------------------------------- preview dpi


def _save(path: Path, dpi: object = None, **kwargs: object) -> tuple[int, int]:
    from matplotlib.image import imread

    fig = Figure(figsize=(4, 3), dpi=100)
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    if dpi is None:
        fig.savefig(path, **kwargs)
    else:
        fig.savefig(path, dpi=dpi, **kwargs)
    return imread(path).shape[:2]


def test_preview_dpi_caps_explicit_and_default_dpi_only_inside_the_block(tmp_path):
    png = tmp_path / "f.png"
    with preview_dpi(50):
        assert _save(png, dpi=300) == (150, 200)  # an explicit dpi, as autogalaxy passes
        assert _save(png) == (150, 200)  # matplotlib's default (the figure's 100 dpi)
        assert _save(png, dpi=20) == (60, 80)  # below the cap: left alone
        # no second draw to crop it: the figure's own size
        assert _save(png, dpi=300, bbox_inches="tight") == (150, 200)
    assert _save(png, dpi=300) == (900, 1200)  # outside: the visualizer's own
    assert _save(png, dpi=300, bbox_inches="tight") != (900, 1200)  # and cropped

    seen = []
    with preview_dpi(50):  # only this thread: autofit's own visuals elsewhere stay full size
        other = threading.Thread(target=lambda: seen.append(_save(tmp_path / "o.png", 300)))
        other.start()
        other.join(JOIN)
    assert seen == [(900, 1200)]


class HighDpiAnalysis(MarkedAnalysis):
    """A quick update saving at an explicit, high dpi (as autogalaxy's fit.png does)."""

    def perform_quick_update(self, paths, instance):
        Path(paths.image_path).mkdir(parents=True, exist_ok=True)
        _save(Path(paths.image_path) / "fit.png", dpi=300)


def test_quick_updates_are_previews_and_the_results_picture_is_full_size(tmp_path,
                                                                          autofit_output):
    from matplotlib.image import imread

    search = af.Emcee(name="preview")
    search.paths.model = gaussian_model()
    data, noise = gaussian_data()
    render = AutofitRender(HighDpiAnalysis(data=data, noise_map=noise), gaussian_model(),
                           search.paths, convert=False, lock_pyplot=False, preview_dpi=60)
    vector = np.array([50.0, 25.0, 10.0])
    picture = render(BestFit(-1.0, vector, 1))
    assert imread(picture).shape[:2] == (180, 240)
    picture = render(ResultFit(-1.0, vector, -1))  # the fit's result: its own resolution
    assert imread(picture).shape[:2] == (900, 1200)


@pytest.mark.slow
def test_a_real_autogalaxy_fit_png_is_drawn_at_the_preview_dpi(tmp_path, autofit_output,
                                                               monkeypatch):
    pytest.importorskip("autogalaxy")
    import autogalaxy as ag
    from autogalaxy_helpers import sersic_imaging, sersic_model
    from autonerves import conf
    from matplotlib.image import imread

    # autogalaxy registers its configuration once, at its first import; a test
    # before this one may have put autonerves' configuration back without it
    monkeypatch.setattr(conf.instance, "configs", list(conf.instance.configs))
    import autoarray

    for package in (autoarray, ag):  # the order autogalaxy's own import registers them
        conf.instance.register(package.__file__)
    model = sersic_model()
    search = af.Emcee(name="galaxy_preview")
    search.paths.model = model
    analysis = ag.AnalysisImaging(dataset=sersic_imaging(), use_jax=False)
    vector = np.asarray(model.physical_values_from_prior_medians)
    sizes = {}
    for dpi in (0, 50):
        render = AutofitRender(analysis, model, search.paths, convert=False,
                               lock_pyplot=False, preview_dpi=dpi)
        sizes[dpi] = imread(render(BestFit(-1.0, vector, 1))).shape[:2]
    # autogalaxy saves fit.png at 300 dpi; the preview at 50: six times fewer pixels a side
    assert sizes[50][0] * 5 < sizes[0][0] and sizes[50][1] * 5 < sizes[0][1]


# --------------------------------------------------------------------------- seconds cadence


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds_per_evaluation", [2.0, 0.001], ids=["slow", "fast"])
def test_the_seconds_cadence_gives_the_same_rhythm_for_slow_and_fast_likelihoods(
        monkeypatch, autofit_output, seconds_per_evaluation):
    clock = FakeClock()
    monkeypatch.setattr(hub_module, "clock", clock)
    live.enable(background=True, backend="thread", quick_update_seconds=10.0)
    # a count that would never fall due: the clock decides
    search = af.Emcee(name="clock", iterations_per_quick_update=10**9)
    fitness = search.make_fitness(analysis=MarkedAnalysis(*gaussian_data()),
                                  model=gaussian_model())
    hub = hub_module.hub_for(fitness)
    due = []
    original = hub.offer

    def offer(vector, log_likelihood, step):
        due.append(clock.now)
        original(vector, log_likelihood, step)

    hub.offer = offer
    evaluations = int(105.0 / seconds_per_evaluation)  # 105 s of fitting either way
    for i in range(evaluations):
        clock.now += seconds_per_evaluation
        fitness.manage_quick_update(np.array([50.0, 25.0, 10.0 + 1e-6 * i]), -1e6 + i)
    fitness.shutdown_quick_update()
    assert len(due) == 10 + 1  # every 10 s, and the final best at the end
    assert np.allclose(np.diff(due[:10]), 10.0, atol=seconds_per_evaluation + 1e-9)
    assert hub.worker.stats.rendered >= 1
