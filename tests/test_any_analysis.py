"""The render process for every analysis (issue #15): defined in a notebook or
in a workspace script without a main guard, fitted in a pipeline, evaluated in
``spawn`` pool workers, built by a search's own ``make_fitness``."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import autofit as af
import pytest
from autofit.non_linear.fitness import Fitness
from autofit_helpers import (
    MarkedAnalysis,
    gaussian_data,
    gaussian_model,
    quick_updates_in_a_fresh_worker,
    read_markers,
)

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.autofit.fitness import LiveFitnessMixin
from autofit_jaxviz.render.process import render_process_counts

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.usefixtures("autofit_output")]
ROOT = Path(__file__).resolve().parents[1]
JOIN = 120.0


def _emcee(name: str, search_class: type = af.Emcee, **kwargs) -> af.Emcee:
    options = dict(nwalkers=20, nsteps=100, iterations_per_quick_update=300, silence=True,
                   seed=1)
    options.update(kwargs)
    return search_class(name=name, **options)


def _analysis(cls: type = MarkedAnalysis, **kwargs) -> MarkedAnalysis:
    data, noise = gaussian_data()
    return cls(data=data, noise_map=noise, **kwargs)


# --------------------------------------------------------------------------- notebooks, scripts

ANALYSIS_SOURCE = """
import os
from pathlib import Path
import numpy as np
import autofit as af
import matplotlib.pyplot as plt
from autofit_jaxviz.flags import LiveUpdates

class Analysis(LiveUpdates, af.ex.Analysis):  # defined here: __main__, not importable
    def perform_quick_update(self, paths, instance):
        x = np.arange(self.data.shape[0])
        fig, ax = plt.subplots(figsize=(3, 2))  # pyplot, as a tutorial's visualizer does
        ax.plot(x, self.data, "k.")
        ax.plot(x, instance.model_data_from(xvalues=x), "r-")
        Path(paths.image_path).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(paths.image_path) / "fit.png")
        plt.close(fig)
        with open({drawn!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
"""

FIT_SOURCE = """
x = np.arange(100)
data = af.ex.Gaussian(centre=50.0, normalization=25.0, sigma=10.0).model_data_from(xvalues=x)
data = data + np.random.default_rng(1).normal(0, 0.1, 100)
model = af.Model(af.ex.Gaussian)
model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)
search = af.Emcee(name="main_defined", nwalkers=20, nsteps=100, iterations_per_quick_update=300,
                  silence=True, seed=1)
result = search.fit(model=model, analysis=Analysis(data=data, noise_map=np.full(100, 0.1)))
"""

LOG_SETUP = """
import logging
from autonerves import conf
import autofit_jaxviz.autofit as live
conf.instance.output_path = {output!r}
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("autofit_jaxviz").addHandler(Keep())
logging.getLogger("autofit_jaxviz").setLevel(logging.INFO)
live.enable(background=True)
"""


def _drawn_by(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()]


@pytest.mark.slow
def test_a_notebook_defined_analysis_is_drawn_in_a_render_process(tmp_path):
    from test_display import KernelFlavour, run_notebook

    drawn, output = tmp_path / "drawn.txt", tmp_path / "output"
    run = run_notebook(tmp_path, KernelFlavour("venv", version("ipykernel"), ()), [
        ("setup", LOG_SETUP.format(output=str(output))),
        ("analysis", ANALYSIS_SOURCE.format(drawn=str(drawn))),
        ("fit", FIT_SOURCE),
        ("check", "import json, os\njson.dumps({'pid': os.getpid(), 'lines': lines})"),
    ], env={})
    info = run.result("check")
    pids = _drawn_by(drawn)
    # one render process; the result's own best may be drawn in the kernel at the end
    assert len(set(pids[:-1])) == 1 and info["pid"] not in pids[:-1]
    assert not any("in a thread" in line for line in info["lines"]), info["lines"]
    assert any("process backend" in line for line in info["lines"])
    # one live image in the fit's cell, updated in place
    images = [o for o in run.cells["fit"].outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert len(run.messages("display_data")) == 1
    assert len(run.messages("update_display_data")) >= 1
    assert list(output.rglob("fit.png"))


@pytest.mark.slow
def test_an_unguarded_workspace_script_runs_once_and_draws_in_a_render_process(tmp_path):
    drawn, runs = tmp_path / "drawn.txt", tmp_path / "runs.txt"
    script = tmp_path / "workspace_fit.py"
    # classes and the fit at the top level, no main guard: a PyAutoFit workspace script
    script.write_text(
        f"import os\nwith open({str(runs)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
        + LOG_SETUP.format(output=str(tmp_path / "output"))
        + ANALYSIS_SOURCE.format(drawn=str(drawn)) + FIT_SOURCE
        + "import json\nprint(os.getpid(), json.dumps(lines))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    pid, lines = int(last.split(" ", 1)[0]), json.loads(last.split(" ", 1)[1])
    assert _drawn_by(runs) == [pid]  # the script ran exactly once
    pids = _drawn_by(drawn)
    assert len(set(pids[:-1])) == 1 and pid not in pids[:-1]
    assert not any("in a thread" in line for line in lines), lines


# --------------------------------------------------------------------------- where workers live


def test_a_fitness_unpickled_in_a_spawn_pool_worker_starts_nothing(tmp_path):
    live.enable(background=True)
    search = _emcee("pool_worker")
    fitness = search.make_fitness(analysis=_analysis(), model=gaussian_model())
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            seen = pool.apply(quick_updates_in_a_fresh_worker, (fitness, 1000))
        assert seen["pid"] != os.getpid() and seen["class"] == "LiveFitness"
        # it owns no worker: no hub, no render process, no child of its own
        assert (seen["hubs"], seen["workers"], seen["render_processes"]) == (0, 0, 0)
        assert seen["children"] == []
        assert not list((tmp_path / "output").rglob("fit.png"))
    finally:
        fitness.shutdown_quick_update()


def test_a_pipeline_of_three_searches_starts_one_render_process(tmp_path):
    live.enable(background=True)
    before = render_process_counts()
    for name in ("first", "second", "third"):
        _emcee(f"pipeline_{name}").fit(model=gaussian_model(), analysis=_analysis())
    after = render_process_counts()
    assert after["started"] - before["started"] == 1
    assert after["reused"] - before["reused"] == 2
    renderers = set()
    for name in ("first", "second", "third"):
        rows = read_markers(next((tmp_path / "output").glob(f"**/pipeline_{name}")))
        renderers |= {pid for *_, pid in rows}
    # (the result's own best may be drawn here at the end, as autofit draws its visuals)
    assert len(renderers - {os.getpid()}) == 1


# --------------------------------------------------------------------------- autofit's classes


class CountingFitness(Fitness):
    """A fitness class of the user's own: one method added, one overridden."""

    def shutdown_quick_update(self):
        self.shut_down = getattr(self, "shut_down", 0) + 1
        super().shutdown_quick_update()

    def describe(self) -> str:
        return f"shut down {self.shut_down} time(s)"


class CountingEmcee(af.Emcee):
    """A search whose make_fitness returns a subclass (defined before enable())."""

    def make_fitness(self, analysis, model, **overrides):
        fitness = super().make_fitness(analysis, model, **overrides)
        fitness.__class__ = CountingFitness
        return fitness


def test_a_make_fitness_override_that_returns_a_subclass_keeps_its_methods(tmp_path):
    live.enable(background=True)

    class LaterCountingEmcee(af.Emcee):  # defined after enable(): seen all the same
        def make_fitness(self, analysis, model, **overrides):
            fitness = super().make_fitness(analysis, model, **overrides)
            fitness.__class__ = CountingFitness
            return fitness

    later = LaterCountingEmcee(name="later", iterations_per_quick_update=300)
    fitness = later.make_fitness(analysis=_analysis(), model=gaussian_model())
    assert isinstance(fitness, CountingFitness) and isinstance(fitness, LiveFitnessMixin)
    fitness.shutdown_quick_update()

    search = _emcee("counting", CountingEmcee)
    fitness = search.make_fitness(analysis=_analysis(), model=gaussian_model())
    copy = pickle.loads(pickle.dumps(fitness))  # a Dynesty checkpoint, say
    assert type(copy) is type(fitness) and isinstance(copy, CountingFitness)
    fitness.shutdown_quick_update()
    captured = {}
    original = hub_module.Hub.__init__

    def remember(hub, fitness, *args, **kwargs):
        captured["fitness"] = fitness
        original(hub, fitness, *args, **kwargs)

    def remember_each(hub, fitness, *args, **kwargs):
        captured.setdefault("hubs", []).append(fitness)
        remember(hub, fitness, *args, **kwargs)

    hub_module.Hub.__init__ = remember_each
    try:
        search.fit(model=gaussian_model(), analysis=_analysis())
    finally:
        hub_module.Hub.__init__ = original
    # the override's super() call was not made live as well: one fit, one hub
    assert len(captured["hubs"]) == 1
    used = captured["fitness"]
    assert isinstance(used, CountingFitness) and isinstance(used, LiveFitnessMixin)
    assert used.describe() == "shut down 1 time(s)"  # its override ran, so did ours
    assert read_markers(tmp_path / "output")  # and the quick updates were drawn
    live.disable()
    from autofit.non_linear.search.execution import SearchExecutionMixin

    from autofit_jaxviz.autofit.hooks import LiveMakeFitness

    for cls in (SearchExecutionMixin, CountingEmcee, LaterCountingEmcee):  # all restored
        assert not isinstance(cls.__dict__["make_fitness"], LiveMakeFitness), cls
    assert "__init_subclass__" not in SearchExecutionMixin.__dict__

    class AfterDisable(af.Emcee):
        def make_fitness(self, analysis, model, **overrides):
            return super().make_fitness(analysis, model, **overrides)

    assert not isinstance(AfterDisable.__dict__["make_fitness"], LiveMakeFitness)


class LoggingAnalysis(MarkedAnalysis):
    """An analysis that keeps a file open: it cannot cross to a render process."""

    def __init__(self, *args, log_path: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_file = open(log_path, "a")  # noqa: SIM115 - held for the fit


def test_an_unsendable_analysis_falls_back_naming_the_attribute(tmp_path, caplog):
    live.enable(background=True)
    analysis = _analysis(LoggingAnalysis, log_path=str(tmp_path / "log.txt"))
    try:
        with caplog.at_level(logging.INFO, logger="autofit_jaxviz"):
            _emcee("unsendable").fit(model=gaussian_model(), analysis=analysis)
    finally:
        analysis.log_file.close()
    said = [r.getMessage() for r in caplog.records if "in a thread" in r.getMessage()]
    assert len(said) == 1 and ".analysis.log_file" in said[0] and "TextIOWrapper" in said[0]
    assert {pid for *_, pid in read_markers(tmp_path / "output")} == {os.getpid()}


def test_a_chosen_process_backend_that_cannot_be_used_is_a_warning(tmp_path, caplog):
    live.enable(background=True, backend="process")
    analysis = _analysis(LoggingAnalysis, log_path=str(tmp_path / "log.txt"))
    search = _emcee("unsendable_chosen")
    try:
        with caplog.at_level(logging.INFO, logger="autofit_jaxviz"):
            fitness = search.make_fitness(analysis=analysis, model=gaussian_model())
        hub = hub_module.hub_for(fitness)
        assert hub.backend == "thread" and hub.worker.backend == "thread"
        (record,) = [r for r in caplog.records if "in a thread" in r.getMessage()]
        assert record.levelno == logging.WARNING and "(the default)" not in record.getMessage()
        fitness.shutdown_quick_update()
    finally:
        analysis.log_file.close()
