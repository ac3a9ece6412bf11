"""Quick updates inside real PyAutoFit fits, with a visualizer that costs ~150 ms.

autofit's example Gaussian (100 data points) is fitted with ``af.Emcee`` (30
walkers x 1,500 steps, a quick update due every 100 evaluations), once per
variant:

* no quick updates (autofit's default cadence, 1e99);
* autofit synchronous: ``perform_quick_update`` on the sampler thread;
* autofit's ``BackgroundQuickUpdate`` (``general.updates.quick_update_background``);
* this library, ``enable(background=True)`` with the thread and the process backend;
* the bookkeeping floor: the same fits with a visualizer that draws nothing
  (this library's thread backend, and autofit synchronous).

The visualizer draws a 2x2-panel matplotlib figure with ``DRAW_POINTS`` points
per panel (pyplot-free ``Figure`` + Agg, so every variant can run it) and saves
it as ``fit.png``: ~150 ms on the machine these numbers come from; the table
reports what it took in each run. Every call appends one line to a marker
file, so the number of images, distinct images (distinct parameter vectors)
and images written before the search ended can be counted.

Then ``af.BlackJAXNUTS`` on the same data (``use_jax=True``, JAX on CPU, 2
chains, 200 warm-up and 2,000 samples, ``iterations_per_quick_update=50``):
autofit alone (it has no quick updates inside its jitted loop) against this
library's in-jit hook with the thread backend, and the number of images
written before the search's end (counted when the fit shuts its quick
updates down, i.e. before the final image).

Every variant runs in a fresh interpreter (``python -c``) in its own
temporary directory, so threads, JAX caches and autofit's config never leak
between variants; the variants are interleaved across the repeats. Times are
``search.fit`` wall times, measured inside that interpreter.

    python benchmarks/run.py --only autofit [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the package and _common importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header, min_median, table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Points drawn in each of the 4 panels; sets the drawing cost (~150 ms here).
DRAW_POINTS = 35_000
#: Each full-size repeat takes 3-5 minutes (the synchronous fit alone ~90 s): at most this many.
MAX_REPEATS = 3
N_DATA = 100
RESULT_PREFIX = "@@BENCH "


# --------------------------------------------------------------------------- drawing


def draw_figure(path: str | os.PathLike, x: np.ndarray, y: np.ndarray,
                data: np.ndarray | None = None) -> float:
    """Draw and save the ~150 ms figure; return the seconds it took.

    Four panels of ``len(x)`` points (curve, residual-like transforms), pyplot-free
    (``Figure`` + Agg), so it is safe on any thread and in a render process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = time.perf_counter()
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    ripple = 0.02 * np.cos(x * 7.3)
    panels = (("model", y), ("model + ripple", y + ripple),
              ("ripple", ripple), ("log |model|", np.log10(np.abs(y) + 1e-3)))
    for ax, (title, values) in zip(axes.flat, panels, strict=True):
        ax.plot(x, values, ".", ms=2)
        ax.plot(x, values, "-", lw=0.5)
        ax.set_title(title)
    if data is not None:
        axes[0, 0].plot(np.arange(len(data)), data, "k.")
    fig.savefig(path, format="png")
    return time.perf_counter() - t0


def append_marker(marker: str | os.PathLike, values: Any, seconds: float) -> None:
    """One line per image: wall clock, pid, draw seconds, the parameters drawn."""
    params = " ".join(repr(float(v)) for v in np.ravel(np.asarray(values, dtype=float)))
    with open(marker, "a") as f:
        f.write(f"{time.time():.6f} {os.getpid()} {seconds:.6f} {params}\n")


def read_markers(marker: str | os.PathLike) -> list[tuple[float, int, float, tuple[float, ...]]]:
    path = Path(marker)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        when, pid, seconds, *params = line.split()
        rows.append((float(when), int(pid), float(seconds), tuple(float(p) for p in params)))
    return rows


def marker_summary(marker: str | os.PathLike) -> dict[str, Any]:
    rows = read_markers(marker)
    drawn = [seconds for _, _, seconds, _ in rows if seconds > 0]
    return {
        "images": len(rows),
        "distinct": len({params for _, _, _, params in rows}),
        "pids": sorted({pid for _, pid, _, _ in rows}),
        "draw_mean": statistics.fmean(drawn) if drawn else 0.0,
    }


class FigureRender:
    """A ``QuickUpdateWorker`` render: the same ~150 ms figure for any parameter vector.

    Picklable (module-level class, plain attributes), so the process backend
    can send it to its render process. Returns the seconds the drawing took.
    """

    def __init__(self, out_dir: str, draw: bool = True) -> None:
        self.out_dir = str(out_dir)
        self.draw = draw

    def __call__(self, payload: Any) -> float:
        values = np.ravel(np.asarray(getattr(payload, "parameters", payload), dtype=float))
        seconds = 0.0
        if self.draw:
            x = np.linspace(0.0, 100.0, DRAW_POINTS)
            y = np.zeros_like(x)
            for k, v in enumerate(values[:6]):
                y += np.sin(x * 0.05 * (k + 1) + v)
            seconds = draw_figure(Path(self.out_dir) / "fit.png", x, y)
        append_marker(Path(self.out_dir) / "markers.txt", values, seconds)
        return seconds


# --------------------------------------------------------------------------- analyses


def _define_analyses() -> None:
    """Define the analysis classes (autofit is imported only when they are needed).

    They are module attributes (``bench_autofit.VisualAnalysis``) so a spawned
    render process can unpickle them.
    """
    import autofit as af

    from autofit_jaxviz.flags import LiveUpdates

    class VisualAnalysis(LiveUpdates, af.ex.Analysis):
        """The example analysis with a ~150 ms quick update (or a no-op one) that
        appends a line to ``marker`` for every image."""

        def __init__(self, data, noise_map, *, marker: str, draw: bool = True,
                     use_jax: bool = False) -> None:
            super().__init__(data=data, noise_map=noise_map, use_jax=use_jax)
            self.marker = marker
            self.draw = draw

        def perform_quick_update(self, paths, instance):
            params = [float(instance.centre), float(instance.normalization),
                      float(instance.sigma)]
            seconds = 0.0
            if self.draw:
                x = np.linspace(0.0, N_DATA - 1, DRAW_POINTS)
                y = np.asarray(instance.model_data_from(xvalues=x, xp=np), dtype=float)
                data = np.asarray(self.data, dtype=float)
                seconds = draw_figure(Path(paths.image_path) / "fit.png", x, y, data)
            append_marker(self.marker, params, seconds)

    VisualAnalysis.__qualname__ = "VisualAnalysis"
    globals()["VisualAnalysis"] = VisualAnalysis


def __getattr__(name: str) -> Any:
    if name == "VisualAnalysis":
        _define_analyses()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gaussian_problem(use_jax: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
    """autofit's example Gaussian: data, noise map and the 3-parameter model."""
    import autofit as af

    x = np.arange(N_DATA)
    truth = af.ex.Gaussian(centre=50.0, normalization=25.0, sigma=10.0)
    data = truth.model_data_from(xvalues=x) + np.random.default_rng(1).normal(0, 0.1, N_DATA)
    model = af.Model(af.ex.Gaussian)
    model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
    model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
    model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)
    return np.asarray(data), np.full(N_DATA, 0.1), model


# --------------------------------------------------------------------------- subprocesses


def quiet() -> None:
    """Silence autofit's (and everyone's) INFO logging and warnings in a child."""
    logging.disable(logging.INFO)
    warnings.simplefilter("ignore")


def run_child(module: str, function: str, kwargs: dict[str, Any],
              timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``module.function(**kwargs)`` in a fresh interpreter, in a fresh temporary
    directory (its cwd), and return the dict it returns (sent back as a JSON line)."""
    code = (
        f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(ROOT)!r}]\n"
        "import importlib, json\n"
        f"result = getattr(importlib.import_module({module!r}), {function!r})"
        "(**json.loads(sys.argv[1]))\n"
        f"print({RESULT_PREFIX!r} + json.dumps(result), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOFIT_JAXVIZ_", "PYAUTO_TEST_MODE", "JAX_ENABLE_X64"))}
    env.update(MPLBACKEND="Agg", PYAUTO_SKIP_WORKSPACE_VERSION_CHECK="1",
               PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory(prefix="afjv-bench-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(
        f"{module}.{function}({kwargs}) exited with {proc.returncode} and no result:\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def interleave(cases: dict[str, Callable[[], dict[str, Any]]],
               repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Run every case once per repeat, side by side; the order rotates each repeat."""
    names = list(cases)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            out[name].append(cases[name]())
            print(f"  [{r + 1}/{repeats}] {name}: {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
    return out


def _watch_end(marker: str, ours: bool, record: dict[str, Any]) -> None:
    """Record the marker count when the fit shuts its quick updates down (before
    the final image); with this library also the worker's stats then."""
    if ours:
        import autofit_jaxviz.autofit.hub as hub_module

        original_close = hub_module.Hub.close
        original_offer = hub_module.Hub.offer_best
        news: list[float] = []

        def offer_best(hub, best):
            if best.log_likelihood > hub.best:  # a new best: the worker gets it
                news.append(time.perf_counter())
            return original_offer(hub, best)

        def close(hub, *args):
            if news:
                record.setdefault("new_best_window", news[-1] - news[0])
            record.setdefault("before_end", len(read_markers(marker)))
            stats = hub.worker.stats
            record.setdefault("submitted", stats.submitted)  # fits handed to the worker
            record.setdefault("superseded", stats.superseded)
            return original_close(hub, *args)

        hub_module.Hub.close = close
        hub_module.Hub.offer_best = offer_best
    else:
        from autofit.non_linear.fitness import Fitness

        original_shutdown = Fitness.shutdown_quick_update

        def shutdown(self):
            if self.paths is not None:
                record.setdefault("before_end", len(read_markers(marker)))
            return original_shutdown(self)

        Fitness.shutdown_quick_update = shutdown


def _setup_fit(variant: str) -> tuple[bool, str]:
    """Configure autofit and this library for ``variant``; return (ours, marker path)."""
    quiet()
    import autofit  # noqa: F401 - registers autofit's config with conf.instance
    from autonerves import conf

    conf.instance.output_path = str(Path.cwd() / "output")
    backend = {"thread": "thread", "process": "process", "floor": "thread"}.get(variant)
    if variant == "autofit-bg":
        conf.instance["general"]["updates"]["quick_update_background"] = True
    if backend is not None:
        import autofit_jaxviz.autofit as live

        live.enable(background=True, backend=backend, notebook_display=False)
    return backend is not None, str(Path.cwd() / "markers.txt")


def emcee_fit(variant: str, nwalkers: int, nsteps: int, cadence: int) -> dict[str, Any]:
    """One Emcee fit of the example Gaussian (runs in a child interpreter).

    ``variant``: ``none``, ``sync``, ``sync-noop``, ``autofit-bg``, ``thread``,
    ``process`` or ``floor`` (this library's thread backend, no-op visualizer).
    """
    ours, marker = _setup_fit(variant)
    import autofit as af

    data, noise, model = gaussian_problem()
    analysis = __getattr__("VisualAnalysis")(
        data, noise, marker=marker, draw=variant not in ("floor", "sync-noop"))
    record: dict[str, Any] = {}
    _watch_end(marker, ours, record)
    search = af.Emcee(
        name=f"emcee_{variant}", nwalkers=nwalkers, nsteps=nsteps, silence=True, seed=1,
        iterations_per_quick_update=None if variant == "none" else cadence,
    )
    t0 = time.perf_counter()
    search.fit(model=model, analysis=analysis)
    record["wall"] = time.perf_counter() - t0
    record.update(marker_summary(marker))
    record["other_pid"] = any(pid != os.getpid() for pid in record["pids"])
    return record


def nuts_fit(variant: str, warmup: int, samples: int, chains: int,
             cadence: int) -> dict[str, Any]:
    """One BlackJAX NUTS fit (``use_jax=True``); ``variant``: ``off``, ``thread``, ``process``."""
    ours, marker = _setup_fit({"off": "sync"}.get(variant, variant))
    import autofit as af

    data, noise, model = gaussian_problem()
    analysis = __getattr__("VisualAnalysis")(data, noise, marker=marker, use_jax=True)
    record: dict[str, Any] = {}
    _watch_end(marker, ours, record)
    search = af.BlackJAXNUTS(
        name=f"nuts_{variant}", num_warmup=warmup, num_samples=samples, num_chains=chains,
        iterations_per_quick_update=cadence, silence=True, seed=2,
    )
    t0 = time.perf_counter()
    search.fit(model=model, analysis=analysis)
    record["wall"] = time.perf_counter() - t0
    record.update(marker_summary(marker))
    return record


# --------------------------------------------------------------------------- report


def fmt_times(values: list[float]) -> str:
    lo, med = min_median(values)
    return f"{lo:.1f} / {med:.1f}"


def fmt_ratio(values: list[float], base: list[float]) -> str:
    median = statistics.median(values) / statistics.median(base)
    return f"{min(values) / min(base):.2f}x / {median:.2f}x"


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r.get(key, 0)) for r in runs)


def fmt_count(runs: list[dict[str, Any]], key: str) -> str:
    value = median_of(runs, key)
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def fmt_handed_on(runs: list[dict[str, Any]]) -> str:
    """Fits this library's hook handed to its worker (``-`` for autofit's own paths)."""
    return fmt_count(runs, "submitted") if all("submitted" in r for r in runs) else "-"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


EMCEE_LABELS = {
    "none": "no quick updates",
    "sync": "autofit synchronous",
    "autofit-bg": "autofit BackgroundQuickUpdate",
    "thread": "autofit_jaxviz, thread backend",
    "process": "autofit_jaxviz, process backend",
    "floor": "autofit_jaxviz thread, no-op visualizer (floor)",
    "sync-noop": "autofit synchronous, no-op visualizer",
}


def emcee_rows(results: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    walls = {name: [r["wall"] for r in runs] for name, runs in results.items()}
    rows = []
    for name, runs in results.items():
        draws = [r["draw_mean"] for r in runs if r["draw_mean"] > 0]
        rows.append([
            EMCEE_LABELS.get(name, name),
            fmt_times(walls[name]),
            fmt_ratio(walls[name], walls["none"]),
            fmt_ratio(walls[name], walls["floor"]) if "floor" in walls else "-",
            "-" if name == "none" else fmt_count(runs, "images"),
            "-" if name == "none" else fmt_count(runs, "distinct"),
            "-" if name == "none" else fmt_count(runs, "before_end"),
            fmt_handed_on(runs),
            f"{statistics.median(draws) * 1e3:.0f}" if draws else "-",
            fmt_window(runs),
        ])
    return rows


def fmt_window(runs: list[dict[str, Any]]) -> str:
    windows = [r["new_best_window"] for r in runs if "new_best_window" in r]
    return f"{statistics.median(windows):.2f}" if windows else "-"


EMCEE_COLUMNS = ["variant", "wall s (min / median)", "vs no updates (min / median)",
                 "vs no-op floor", "images", "distinct images", "images before the end",
                 "fits handed on", "draw ms", "new bests within s"]


def run_emcee(variants: list[str], repeats: int, nwalkers: int, nsteps: int,
              cadence: int) -> dict[str, list[dict[str, Any]]]:
    kwargs = dict(nwalkers=nwalkers, nsteps=nsteps, cadence=cadence)
    cases = {v: (lambda v=v: run_child("bench_autofit", "emcee_fit", dict(kwargs, variant=v)))
             for v in variants}
    return interleave(cases, repeats)


def run(repeats: int = 3, quick: bool = False) -> str:
    """The Markdown section for BENCHMARKS.md."""
    started = time.perf_counter()
    repeats = 1 if quick else max(3, min(repeats, MAX_REPEATS))
    nwalkers, nsteps, cadence = 30, (300 if quick else 1_500), 100
    warmup, samples, chains, nuts_cadence = (50, 300, 2, 50) if quick else (200, 2_000, 2, 50)

    print("== autofit: Emcee", file=sys.stderr, flush=True)
    emcee = run_emcee(list(EMCEE_LABELS), repeats, nwalkers, nsteps, cadence)
    emcee_seconds = time.perf_counter() - started

    print("== autofit: BlackJAX NUTS", file=sys.stderr, flush=True)
    nuts_started = time.perf_counter()
    nuts_kwargs = dict(warmup=warmup, samples=samples, chains=chains, cadence=nuts_cadence)
    nuts = interleave(
        {v: (lambda v=v: run_child("bench_autofit", "nuts_fit", dict(nuts_kwargs, variant=v)))
         for v in ("off", "thread", "process")},
        repeats,
    )
    nuts_seconds = time.perf_counter() - nuts_started

    command = "python benchmarks/run.py --only autofit" + (" --quick" if quick else "")
    text = header("Quick updates in real PyAutoFit fits (autofit/)", command)
    import autofit

    text += (
        f"\nautofit {autofit.__version__}; every variant in a fresh interpreter, interleaved; "
        f"{repeats} repeat{'s' if repeats > 1 else ''}"
        + ("" if quick else f" (capped at {MAX_REPEATS}: each repeat includes the ~90 s "
                            "synchronous fit)")
        + ". Wall time of `search.fit`, min / median; ratios are min/min and median/median. "
        "Counts are medians over the repeats. *images*: lines in the visualizer's marker "
        "file; *distinct*: distinct parameter vectors drawn; *before the end*: images "
        "written when the fit shut its quick updates down (before the final image); *fits "
        "handed on*: best fits this library's hook gave its latest-only worker (it hands on a "
        "fit only when the best improved since the last one; the rest were superseded before "
        "a render was free).\n\n"
        f"**Emcee**, example Gaussian ({N_DATA} points), {nwalkers} walkers x {nsteps:,} steps, "
        f"a quick update due every {cadence} evaluations, visualizer: 2x2-panel matplotlib "
        f"figure of {DRAW_POINTS:,} points per panel (*draw ms*: its median time per image "
        "in that variant):\n\n"
    )
    text += table(EMCEE_COLUMNS, emcee_rows(emcee))
    walls = {name: [r["wall"] for r in runs] for name, runs in emcee.items()}
    floor = statistics.median(walls["floor"])
    bg_distinct = median_of(emcee["autofit-bg"], "distinct")
    lines = []
    for name in ("thread", "process"):
        ratio = statistics.median(walls[name]) / floor
        distinct = median_of(emcee[name], "distinct")
        lines.append(
            f"{name} backend: {ratio:.2f}x the no-op floor ({verdict(ratio <= 1.10)}, goal "
            f"<= 1.10x); {distinct:.0f} distinct images vs {bg_distinct:.0f} from autofit's "
            f"background thread ({verdict(distinct >= bg_distinct)})"
        )
    text += "\nGoals (medians): " + "; ".join(lines) + ".\n"
    text += (
        "\n*new bests within s*: from the first to the last new best fit handed to this "
        "library's worker. Every image this library draws is a new best fit, so its distinct "
        "images are bounded by about that window divided by *draw ms*, plus one; autofit's "
        "background thread slows the sampler down (see *wall s*), which stretches the same "
        "improvements over a longer time and leaves room for more of them to be drawn.\n"
    )

    text += (
        f"\n**BlackJAX NUTS**, same data, `use_jax=True` (JAX on CPU), {chains} chains, "
        f"{warmup} warm-up + {samples:,} samples, `iterations_per_quick_update={nuts_cadence}`; "
        "*off*: autofit alone with the same cadence; *on*: this library, "
        "`enable(background=True)` with each backend:\n\n"
    )
    nuts_walls = {name: [r["wall"] for r in runs] for name, runs in nuts.items()}
    nuts_rows = []
    for name, label in (("off", "autofit alone (off)"), ("thread", "autofit_jaxviz, thread"),
                        ("process", "autofit_jaxviz, process (the default)")):
        runs = nuts[name]
        nuts_rows.append([label, fmt_times(nuts_walls[name]),
                          fmt_ratio(nuts_walls[name], nuts_walls["off"]),
                          fmt_count(runs, "before_end"), fmt_count(runs, "images"),
                          fmt_handed_on(runs)])
    text += table(["variant", "wall s (min / median)", "vs off (min / median)",
                   "images before the end", "images in all", "fits handed on"], nuts_rows)
    ratio = statistics.median(nuts_walls["process"]) / statistics.median(nuts_walls["off"])
    during = median_of(nuts["process"], "before_end")
    text += (
        f"\nGoals (medians, process backend): {during:.0f} images during sampling "
        f"({verdict(during >= 10)}, goal >= 10) at {ratio:.2f}x the wall time without updates "
        f"({verdict(ratio <= 1.10)}, goal <= 1.10x). Every image is a new best fit. The "
        "log-likelihood is traced once and serves autofit's first evaluation, the warm-up "
        "(a separate jitted run) and the sampling scan; most new bests arrive in a burst at "
        "the start of the warm-up, faster than one render, and the sampling scan itself is "
        "short. Reporting every evaluation instead of about 1 in the cadence gave 5-8 "
        "images at 1.2-1.3x the wall time (measured during development, 3 repeats).\n"
        f"\nRun time of this benchmark: Emcee {emcee_seconds / 60:.1f} min, "
        f"NUTS {nuts_seconds / 60:.1f} min.\n"
    )
    return text


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(repeats=args.repeats, quick=args.quick))
