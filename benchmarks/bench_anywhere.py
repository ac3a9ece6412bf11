"""The render process for analyses defined where users define them (issue #15).

autofit's example Gaussian, fitted with ``af.Emcee`` (30 walkers x 1,500 steps,
a quick update due every 100 evaluations), the analysis class and its pyplot
visualizer (4 panels, ``DRAW_POINTS`` points each, ~150 ms) defined *in the
user's own code*, never in an importable module:

* in a Jupyter notebook, run in a real kernel (nbclient + ipykernel);
* in a workspace-style script: classes and the fit at the top level, no
  ``if __name__ == "__main__":`` guard;
* in a three-search pipeline (one script, three Emcee fits one after another).

Variants, interleaved, each in a fresh kernel or interpreter: no quick updates
(``none``); autofit's own background thread (``autofit-bg``); this library's
thread and process backends; and the floor: this library's thread backend
with a visualizer that draws nothing. Times are ``search.fit`` wall times
measured inside the kernel or script; kernel start-up is not counted.

    python benchmarks/run.py --only anywhere [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header, min_median, table
from bench_autofit import fmt_ratio, fmt_times, interleave

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRAW_POINTS = 35_000
RESULT_PREFIX = "@@BENCH "
VARIANTS = ["none", "autofit-bg", "thread", "process", "floor"]
LABELS = {
    "none": "no quick updates",
    "autofit-bg": "autofit's background thread",
    "thread": "autofit_jaxviz thread",
    "process": "autofit_jaxviz process (the default)",
    "floor": "autofit_jaxviz thread, no-op visualizer (floor)",
}

SETUP = """
import json, logging, os, time, warnings
logging.disable(logging.INFO)
warnings.simplefilter("ignore")
from pathlib import Path
import numpy as np
import autofit as af
import matplotlib.pyplot as plt
from autonerves import conf
from autofit_jaxviz.flags import LiveUpdates
conf.instance.output_path = str(Path.cwd() / "output")
VARIANT = {variant!r}
MARKER = str(Path.cwd() / "markers.txt")
if VARIANT == "autofit-bg":
    conf.instance["general"]["updates"]["quick_update_background"] = True
if VARIANT in ("thread", "process", "floor"):
    import autofit_jaxviz.autofit as live
    live.enable(background=True, backend="thread" if VARIANT == "floor" else VARIANT)
"""

ANALYSIS = """
class Analysis(LiveUpdates, af.ex.Analysis):
    def perform_quick_update(self, paths, instance):
        start = time.perf_counter()
        if VARIANT != "floor":
            x = np.linspace(0.0, 99.0, {points})
            y = np.asarray(instance.model_data_from(xvalues=x), dtype=float)
            fig, axes = plt.subplots(2, 2, figsize=(8, 6))
            for k, ax in enumerate(axes.flat):
                ax.plot(x, np.sin(y * 0.1 * (k + 1)) if k else y, lw=0.5)
                ax.plot(np.arange(self.data.shape[0]), self.data, "k.", ms=2)
            Path(paths.image_path).mkdir(parents=True, exist_ok=True)
            fig.savefig(Path(paths.image_path) / "fit.png", dpi=100)
            plt.close(fig)
        with open(MARKER, "a") as f:
            f.write(f"{{os.getpid()}} {{time.perf_counter() - start:.4f}}\\n")
"""

FIT = """
x = np.arange(100)
truth = af.ex.Gaussian(centre=50.0, normalization=25.0, sigma=10.0)
data = truth.model_data_from(xvalues=x) + np.random.default_rng(1).normal(0, 0.1, 100)
model = af.Model(af.ex.Gaussian)
model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)
walls = []
for index in range({searches}):
    search = af.Emcee(name=f"fit_{{index}}", nwalkers={nwalkers}, nsteps={nsteps},
                      silence=True, seed=1,
                      iterations_per_quick_update=None if VARIANT == "none" else {cadence})
    start = time.perf_counter()
    search.fit(model=model, analysis=Analysis(data=data, noise_map=np.full(100, 0.1)))
    walls.append(time.perf_counter() - start)
"""

REPORT = """
from autofit_jaxviz.render.process import render_process_counts
rows = Path(MARKER).read_text().split("\\n") if Path(MARKER).exists() else []
pids = [int(r.split()[0]) for r in rows if r]
draws = [float(r.split()[1]) for r in rows if r]
RESULT = json.dumps({"walls": walls, "images": len(pids),
                     "in_render_process": sum(p != os.getpid() for p in pids),
                     "draw_ms": 1000 * sorted(draws)[len(draws) // 2] if draws else 0.0,
                     "starts": render_process_counts()["started"]})
"""


def _sources(variant: str, searches: int, nwalkers: int, nsteps: int,
             cadence: int) -> list[str]:
    return [SETUP.format(variant=variant), ANALYSIS.format(points=DRAW_POINTS),
            FIT.format(searches=searches, nwalkers=nwalkers, nsteps=nsteps, cadence=cadence),
            REPORT]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOFIT_JAXVIZ_", "PYAUTO_TEST_MODE", "JAX_ENABLE_X64",
                                "MPLBACKEND", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(ROOT), PYAUTO_SKIP_WORKSPACE_VERSION_CHECK="1",
               PYTHONWARNINGS="ignore")
    return env


def script_fit(variant: str, **sizes: int) -> dict[str, Any]:
    """The sources as one unguarded script, run once; counts how often its top level ran."""
    with tempfile.TemporaryDirectory(prefix="afjv-bench-") as tmp:
        runs = Path(tmp) / "runs.txt"
        top = f"with open({str(runs)!r}, 'a') as _f:\n    _f.write('run\\n')\n"
        script = Path(tmp) / "workspace_fit.py"
        script.write_text(top + "".join(_sources(variant, **sizes))
                          + f"print({RESULT_PREFIX!r} + RESULT, flush=True)\n")
        env = _env()
        env["MPLBACKEND"] = "Agg"
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=1800)
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_PREFIX):
                record = json.loads(line[len(RESULT_PREFIX):])
                record["script_runs"] = len(runs.read_text().split())
                return record
    raise RuntimeError(f"{variant}: exit {proc.returncode}\n{proc.stderr[-4000:]}")


def notebook_fit(variant: str, **sizes: int) -> dict[str, Any]:
    """The sources as notebook cells, run in a fresh kernel of this interpreter."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="afjv-bench-") as tmp:
        spec = Path(tmp) / "kernels" / "afjv-bench"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "autofit_jaxviz bench", "language": "python"}))
        cells = [*_sources(variant, **sizes), "RESULT"]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        manager = KernelManager(kernel_name="afjv-bench", kernel_spec_manager=KernelSpecManager(
            kernel_dirs=[str(spec.parent)]))
        client = NotebookClient(nb, km=manager, timeout=1800, startup_timeout=120,
                                resources={"metadata": {"path": tmp}})
        client.execute(env=_env())
        (out,) = [o for o in nb.cells[-1].outputs if o.output_type == "execute_result"]
        record = json.loads(eval(out.data["text/plain"]))  # noqa: S307 - our own cell's repr
        fit_outputs = nb.cells[2].outputs
        record["cell_images"] = sum("image/png" in o.get("data", {}) for o in fit_outputs)
        return record


class LargeAnalysisRender:
    """A render holding ``megabytes`` of arrays (a large imaging dataset, say)."""

    def __init__(self, megabytes: int) -> None:
        import numpy as np

        n = megabytes * 1024 * 1024 // 8
        self.data = np.random.default_rng(0).normal(size=n)
        self.noise = np.ones(n // 4)

    def __call__(self, payload: Any) -> float:
        return float(self.data[int(payload) % self.data.size] + self.noise.sum())


def send_large(megabytes: int, how: str) -> dict[str, Any]:
    """In a fresh interpreter: what sending a large analysis costs the fit's process.

    ``how``: ``ours`` (serialized once, arrays out of band, then a first
    picture in a render process) or ``pickle`` (a plain in-band pickle, what a
    render pickled as one bytes object would cost)."""
    import pickle
    import resource
    import time

    render = LargeAnalysisRender(megabytes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if how == "pickle":
        data = pickle.dumps(render, protocol=5)
        serialize_s, head = time.perf_counter() - start, len(data)
        first_picture = None
    else:
        from autofit_jaxviz.render.process import ProcessRender, close_render_processes

        sent = ProcessRender(render)
        serialize_s, head = time.perf_counter() - start, len(sent.serialized.head)
        start = time.perf_counter()
        sent(1)
        first_picture = time.perf_counter() - start
        sent.close()
        close_render_processes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"serialize_s": serialize_s, "head_bytes": head, "extra_peak_mb": peak - before,
            "first_picture_s": first_picture,
            "data_mb": (render.data.nbytes + render.noise.nbytes) / 2**20}


def _row(name: str, runs: list[dict[str, Any]], base: list[float], floor: list[float],
         extra: list[str]) -> list[str]:
    walls = [sum(r["walls"]) for r in runs]
    images = sorted(r["images"] for r in runs)[len(runs) // 2]
    in_process = sorted(r["in_render_process"] for r in runs)[len(runs) // 2]
    draw = sorted(r["draw_ms"] for r in runs)[len(runs) // 2]
    return [LABELS[name], fmt_times(walls), fmt_ratio(walls, base), fmt_ratio(walls, floor),
            str(images), str(in_process), f"{draw:.0f}" if draw else "-", *extra]


def _section(title: str, results: dict[str, list[dict[str, Any]]],
             extra_columns: list[str], extra: Any) -> tuple[str, dict[str, float]]:
    base = [sum(r["walls"]) for r in results["none"]]
    floor = [sum(r["walls"]) for r in results["floor"]]
    rows = [_row(n, runs, base, floor, extra(runs)) for n, runs in results.items()]
    columns = ["variant", "wall s (min / median)", "vs no updates (min / median)",
               "vs no-op floor (min / median)", "images", "drawn in a render process",
               "draw ms (median)", *extra_columns]
    _, floor_median = min_median(floor)
    medians = {n: min_median([sum(r["walls"]) for r in runs])[1] / floor_median
               for n, runs in results.items()}
    return f"#### {title}\n\n" + table(columns, rows), medians


def run(repeats: int = 3, quick: bool = False) -> str:
    sizes = dict(nwalkers=30, nsteps=1500, cadence=100)
    if quick:
        sizes, repeats = dict(nwalkers=10, nsteps=100, cadence=100), 1
    command = "python benchmarks/run.py --only anywhere" + (" --quick" if quick else "")
    out = [header("Analyses defined in a notebook, a script, a pipeline", command),
           f"autofit's example Gaussian with `af.Emcee` ({sizes['nwalkers']} walkers x "
           f"{sizes['nsteps']} steps, a quick update due every {sizes['cadence']} "
           f"evaluations), the analysis and its pyplot visualizer ({DRAW_POINTS:,} points "
           f"in 4 panels) defined in the notebook or script itself; {repeats} repeats, "
           "variants interleaved, each in a fresh kernel or interpreter.\n"]
    from bench_autofit import run_child

    megabytes = 20 if quick else 160
    sending = interleave({how: (lambda how=how: run_child(
        "bench_anywhere", "send_large", {"megabytes": megabytes, "how": how}))
        for how in ("ours", "pickle")}, repeats)
    rows = []
    for how, label in (("ours", "this library: serialized once, arrays out of band"),
                       ("pickle", "a plain pickle (one in-band bytes object)")):
        runs = sending[how]
        med = {k: sorted(r[k] for r in runs)[len(runs) // 2]
               for k in ("serialize_s", "head_bytes", "extra_peak_mb")}
        first = [r["first_picture_s"] for r in runs if r["first_picture_s"] is not None]
        rows.append([label, f"{runs[0]['data_mb']:.0f}", f"{1000 * med['serialize_s']:.1f}",
                     f"{med['head_bytes']:,}", f"{med['extra_peak_mb']:.0f}",
                     f"{sorted(first)[len(first) // 2]:.2f}" if first else "-"])
    out.append("#### Sending a large analysis to the render process\n\n" + table(
        ["how", "arrays MB", "serialize ms (median)", "pickle stream bytes",
         "extra peak memory in the fit's process MB", "first picture s (start, load, draw)"],
        rows))
    notebook = interleave({v: (lambda v=v: notebook_fit(v, searches=1, **sizes))
                           for v in VARIANTS}, repeats)
    text, nb_ratios = _section("In a Jupyter notebook (real kernel, nbclient)", notebook,
                               ["images in the fit's cell"],
                               lambda runs: [str(sorted(r["cell_images"] for r in runs)
                                                 [len(runs) // 2])])
    out.append(text)
    script = interleave({v: (lambda v=v: script_fit(v, searches=1, **sizes))
                         for v in VARIANTS}, repeats)
    text, sc_ratios = _section("In an unguarded workspace script", script,
                               ["top-level runs"],
                               lambda runs: [str(max(r["script_runs"] for r in runs))])
    out.append(text)
    pipeline = interleave({v: (lambda v=v: script_fit(v, searches=3, **sizes))
                           for v in ("none", "process", "floor")}, repeats)
    text, pl_ratios = _section("A three-search pipeline (one unguarded script)", pipeline,
                               ["render processes started"],
                               lambda runs: [str(max(r["starts"] for r in runs))])
    out.append(text)
    starts = max(r["starts"] for r in pipeline["process"])
    out.append(
        "Goals (medians, vs the no-op floor): notebook process backend "
        f"{nb_ratios['process']:.2f}x ({'met' if nb_ratios['process'] <= 1.05 else '**missed**'}"
        ", goal <= 1.05x, one image in the cell); script "
        f"{sc_ratios['process']:.2f}x ({'met' if sc_ratios['process'] <= 1.05 else '**missed**'}"
        f", goal <= 1.05x, the script runs once); pipeline {pl_ratios['process']:.2f}x with "
        f"{starts} render process start-up(s) ({'met' if starts == 1 else '**missed**'}, "
        "goal: one).\n")
    return "\n".join(out)
