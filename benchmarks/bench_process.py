"""The process backend: drawing in a spawned render process instead of a thread.

Three measurements, each variant in a fresh interpreter (``python -c``),
variants interleaved across the repeats:

1. a Python-bound sampler: autofit's Emcee on its example Gaussian (the
   set-up of ``bench_autofit.py``, fewer steps) with the ~150 ms matplotlib
   quick update: no quick updates, this library's thread and process
   backends, and autofit's own ``BackgroundQuickUpdate`` thread;
2. a jitted sampler: random-walk Metropolis on a 256x256 2-D Gaussian image
   model (6 parameters) in one ``lax.scan`` under ``jit``, with the in-jit
   ``BestFitTracker`` reporting to a ``QuickUpdateWorker`` whose render draws
   the same ~150 ms figure: steps per second with no tracker, and with the
   thread and process backends (plus a no-op render: the tracker's own cost,
   at the benchmark's cadence and at a 10x denser one). The chain starts far
   from the truth with small steps, so the best keeps improving for most of
   the run and the renderer is busy throughout.
   The first run compiles and starts the worker (and its render process); the
   second run, from the same key with the host best reset, is timed;
3. the start-up of the process backend: from the first ``submit`` to the
   first finished render, minus the time the render itself took (measured in
   the render process), for a plain matplotlib render and for this library's
   autofit render (the render process then also imports autofit and unpickles
   the analysis and model).

    python benchmarks/run.py --only process [--quick] [--repeats N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the package and _common importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header, min_median, table
from bench_autofit import (
    DRAW_POINTS,
    FigureRender,
    fmt_count,
    fmt_ratio,
    fmt_times,
    interleave,
    marker_summary,
    quiet,
    run_child,
    run_emcee,
    verdict,
)

from autofit_jaxviz.render.process import RENDER_NICENESS

PIXELS = 256
TRUTH = np.array([125.2, 134.8, 16.8, 10.0, 1.0, 0.2], np.float32)  # x, y, sigma, amp, bg, e
#: Far from the truth with small steps: the chain is still converging for most of the
#: run, so the best keeps improving (~650 improvements reported in 100,000 steps).
START = np.array([100.0, 160.0, 30.0, 5.0, 0.5, 0.0], np.float32)
STEP_SCALE = np.array([0.002, 0.002, 0.0015, 0.0015, 0.0002, 0.0002], np.float32)
NOISE = 0.5
#: Tracker cadence: at ~50 us a step, 1,000 steps is ~50 ms, still a few fits per render.
EVERY = 1_000
#: A denser cadence, for the tracker's own cost (with a no-op render) only.
DENSE_EVERY = 100


# --------------------------------------------------------------------------- (2) jitted sampler


def _image(theta: Any, yy: Any, xx: Any) -> Any:
    import jax.numpy as jnp

    x, y, sigma, amp, bg, e = theta
    dx, dy = xx - x, yy - y
    r2 = (dx * dx) * (1.0 + e) + (dy * dy) * (1.0 - e)
    return bg + amp * jnp.exp(-0.5 * r2 / (sigma * sigma))


def scan_sampler(variant: str, steps: int, every: int, pin: bool = False,
                 niceness: int | None = None) -> dict[str, Any]:
    """Time one jitted random-walk Metropolis run (in a child interpreter).

    ``variant``: ``none`` (no tracker), ``thread``, ``process``, or ``noop`` (the
    tracker and a thread worker whose render only appends a marker line).
    ``pin``: the sampler (and XLA's threads) on CPU 0 only, the render process
    (if any) on CPU 1 only. ``niceness``: the render process's nice increment
    (``None``: the library's default).
    """
    quiet()
    if pin:  # before JAX starts its threads, which inherit it
        os.sched_setaffinity(0, {0})
    import jax
    import jax.numpy as jnp
    from jax import lax

    from autofit_jaxviz import BestFitTracker
    from autofit_jaxviz.render.worker import QuickUpdateWorker

    yy, xx = jnp.mgrid[0:PIXELS, 0:PIXELS].astype(jnp.float32)
    rng = np.random.default_rng(7)
    clean = np.asarray(_image(jnp.asarray(TRUTH), yy, xx))
    data = jnp.asarray(clean + rng.normal(0, NOISE, clean.shape).astype(np.float32))

    def log_likelihood(theta):
        resid = (data - _image(theta, yy, xx)) / NOISE
        return -0.5 * jnp.sum(resid * resid)

    worker = tracker = None
    out_dir = Path.cwd()
    if variant != "none":
        mode = "process" if variant == "process" else "thread"
        worker = QuickUpdateWorker(FigureRender(str(out_dir), draw=variant != "noop"),
                                   backend=mode, name="bench")
        tracker = BestFitTracker(worker, every=every)
        if niceness is not None and mode == "process":
            worker._process_render.niceness = niceness
        if pin and mode == "process":
            worker.prestart()
            os.sched_setaffinity(worker._process_render.pid, {1})

    def body(carry, key):
        theta, ll, state = carry
        k1, k2 = jax.random.split(key)
        proposal = theta + STEP_SCALE * jax.random.normal(k1, theta.shape)
        ll_prop = log_likelihood(proposal)
        accept = jnp.log(jax.random.uniform(k2)) < ll_prop - ll
        theta = jnp.where(accept, proposal, theta)
        ll = jnp.where(accept, ll_prop, ll)
        if tracker is not None:
            state = tracker.update(state, theta, ll)
        return (theta, ll, state), None

    @jax.jit
    def sample(key):
        theta0 = jnp.asarray(START)
        state = None if tracker is None else tracker.init(theta0)
        (theta, ll, state), _ = lax.scan(body, (theta0, log_likelihood(theta0), state),
                                         jax.random.split(key, steps))
        if tracker is not None:
            state = tracker.report_final(state)
        return theta, ll, state

    key = jax.random.key(0)

    def timed() -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(sample(key))
        jax.effects_barrier()
        record["cpu"] = time.process_time() - c0  # this interpreter's CPU seconds, all threads
        return time.perf_counter() - t0

    record: dict[str, Any] = {}
    first = timed()  # compiles; starts the renderer (and the render process)
    record["first"] = first
    if worker is not None:
        worker.flush(120)
        tracker.sink.reset()  # the timed run hands its improvements on again
        before = worker.stats
        marker_before = marker_summary(out_dir / "markers.txt")["images"]
    seconds = timed()
    record.update(seconds=seconds, steps_per_s=steps / seconds)
    if worker is not None:
        during = worker.stats
        record["rendered_during"] = during.rendered - before.rendered
        record["submitted"] = during.submitted - before.submitted
        worker.flush(120)
        record["images"] = marker_summary(out_dir / "markers.txt")["images"] - marker_before
        record["draw_mean"] = marker_summary(out_dir / "markers.txt")["draw_mean"]
        worker.shutdown(60)
    return record


# --------------------------------------------------------------------------- (3) start-up


def process_startup(kind: str) -> dict[str, Any]:
    """Seconds from the first ``submit`` to the first finished render, minus the
    render's own time, for a fresh process backend (in a child interpreter).

    ``kind``: ``figure`` (``FigureRender``), ``autofit`` (this library's autofit
    render of the example Gaussian, built by ``enable`` + ``make_fitness``; the
    clock then starts at ``make_fitness``, which pre-starts the render process).
    """
    quiet()
    import jax  # noqa: F401 - a sampler's interpreter has JAX loaded: so has this one

    from autofit_jaxviz.payload import BestFit
    from autofit_jaxviz.render.worker import QuickUpdateWorker

    marker = Path.cwd() / "markers.txt"
    record: dict[str, Any] = {}
    if kind == "figure":
        t0 = time.perf_counter()
        worker = QuickUpdateWorker(FigureRender(str(Path.cwd())), backend="process", name="bench")
        worker.submit(np.zeros(6))
        worker.flush(120)
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        worker.submit(np.ones(6))
        worker.flush(120)
        second = time.perf_counter() - t1
    else:
        import autofit as af
        import bench_autofit
        from autonerves import conf

        import autofit_jaxviz.autofit as live
        import autofit_jaxviz.autofit.hub as hub_module

        conf.instance.output_path = str(Path.cwd() / "output")
        live.enable(background=True, backend="process", notebook_display=False)
        data, noise, model = bench_autofit.gaussian_problem()
        analysis = bench_autofit.VisualAnalysis(data, noise, marker=str(marker))
        search = af.Emcee(name="startup", nwalkers=30, nsteps=10, silence=True,
                          iterations_per_quick_update=100)
        search.paths.model = model
        vector = [50.0, 25.0, 10.0]
        t0 = time.perf_counter()
        fitness = search.make_fitness(analysis=analysis, model=model)
        record["make_fitness"] = time.perf_counter() - t0
        hub = hub_module.hubs[fitness._jaxviz_key]
        hub.offer_best(BestFit(-1.0, np.asarray(vector), 1))
        hub.worker.flush(120)
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        hub.offer_best(BestFit(0.0, np.asarray(vector) * 1.01, 2))
        hub.worker.flush(120)
        second = time.perf_counter() - t1
        worker = hub.worker
    draws = [seconds for *_, seconds, _ in _marker_rows(marker)]
    record.update(first=first, second=second, draw_first=draws[0], draw_second=draws[1],
                  startup=first - draws[0], overhead=second - draws[1],
                  rendered=worker.stats.rendered)
    t2 = time.perf_counter()
    worker.shutdown(60)
    record["shutdown"] = time.perf_counter() - t2
    return record


def _marker_rows(marker: Path) -> list[tuple[Any, ...]]:
    from bench_autofit import read_markers

    return [(pid, seconds, params) for _, pid, seconds, params in read_markers(marker)]


# --------------------------------------------------------------------------- report


def run(repeats: int = 5, quick: bool = False) -> str:
    """The Markdown section for BENCHMARKS.md."""
    started = time.perf_counter()
    repeats = 1 if quick else max(3, repeats)
    nwalkers, nsteps, cadence = 30, (200 if quick else 1500), 100
    steps, every = (20_000 if quick else 100_000), EVERY

    print("== process: Emcee", file=sys.stderr, flush=True)
    emcee = run_emcee(["none", "thread", "process", "autofit-bg"], repeats, nwalkers, nsteps,
                      cadence)
    emcee_seconds = time.perf_counter() - started

    print("== process: jitted scan", file=sys.stderr, flush=True)
    t = time.perf_counter()
    scan_cases = {  # name: (variant, every, pinned, niceness)
        "none": ("none", every, False, None), "noop": ("noop", every, False, None),
        "thread": ("thread", every, False, None), "process": ("process", every, False, None),
        "process-nice0": ("process", every, False, 0),
        "noop-dense": ("noop", DENSE_EVERY, False, None),
    }
    pinning = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if pinning:
        scan_cases.update({"none-pinned": ("none", every, True, None),
                           "process-pinned": ("process", every, True, None)})
    scan = interleave(
        {name: (lambda v=v, e=e, pin=pin, nice=nice: run_child(
            "bench_process", "scan_sampler",
            dict(variant=v, steps=steps, every=e, pin=pin, niceness=nice)))
         for name, (v, e, pin, nice) in scan_cases.items()},
        repeats,
    )
    scan_seconds = time.perf_counter() - t

    print("== process: start-up", file=sys.stderr, flush=True)
    t = time.perf_counter()
    startup = interleave(
        {k: (lambda k=k: run_child("bench_process", "process_startup", dict(kind=k)))
         for k in ("figure", "autofit")},
        repeats,
    )
    startup_seconds = time.perf_counter() - t

    command = "python benchmarks/run.py --only process" + (" --quick" if quick else "")
    text = header("Render process backend (render/process.py)", command)
    text += (
        f"\nEvery variant in a fresh interpreter, interleaved; {repeats} repeat"
        f"{'s' if repeats > 1 else ''}; min / median; ratios min/min and median/median; "
        "counts are medians. The render is a 2x2-panel matplotlib figure of "
        f"{DRAW_POINTS:,} points per panel (~150 ms alone; *draw ms* is what it took "
        "in that variant).\n\n"
        f"**1. Python-bound sampler**: autofit Emcee, example Gaussian, {nwalkers} walkers x "
        f"{nsteps:,} steps, a quick update due every {cadence} evaluations; wall time of "
        "`search.fit`:\n\n"
    )
    labels = {"none": "no quick updates", "thread": "autofit_jaxviz, thread backend",
              "process": "autofit_jaxviz, process backend",
              "autofit-bg": "autofit BackgroundQuickUpdate"}
    walls = {name: [r["wall"] for r in runs] for name, runs in emcee.items()}
    rows = []
    for name, runs in emcee.items():
        draws = [r["draw_mean"] for r in runs if r["draw_mean"] > 0]
        rows.append([labels[name], fmt_times(walls[name]), fmt_ratio(walls[name], walls["none"]),
                     "-" if name == "none" else fmt_count(runs, "images"),
                     "-" if name == "none" else fmt_count(runs, "before_end"),
                     f"{statistics.median(draws) * 1e3:.0f}" if draws else "-"])
    text += table(["variant", "wall s (min / median)", "vs no updates (min / median)",
                   "images", "images before the end", "draw ms"], rows)
    emcee_ratio = statistics.median(walls["process"]) / statistics.median(walls["none"])

    text += (
        f"\n**2. Jitted sampler**: random-walk Metropolis, {PIXELS}x{PIXELS} image, 6 "
        f"parameters, {steps:,} steps in one `lax.scan` (float32, one chain), "
        f"`BestFitTracker(worker, every={every})`; the timed run excludes compilation and "
        "the render process's start (the run before it did both). *Sampler process CPU / "
        "wall*: cores the sampler's interpreter used (XLA runs this model on several threads; "
        "with the thread backend it includes the render thread). *Pinned* rows: the sampler "
        "and XLA's threads restricted to CPU 0 and the render process to CPU 1, so the render "
        "has a core the sampler does not use:\n\n"
    )
    labels = {"none": "no tracker (no updates)", "noop": "tracker, no-op render (thread)",
              "thread": "tracker, thread backend",
              "process": f"tracker, process backend (render process at nice +{RENDER_NICENESS})",
              "process-nice0": "tracker, process backend, render process at the sampler's "
                               "priority",
              "noop-dense": f"tracker every={DENSE_EVERY}, no-op render (thread)",
              "none-pinned": "pinned: no tracker, sampler on CPU 0",
              "process-pinned": "pinned: process backend, render process on CPU 1"}
    bases = {"none-pinned": "none-pinned", "process-pinned": "none-pinned"}
    rates = {name: [r["steps_per_s"] for r in runs] for name, runs in scan.items()}
    times = {name: [r["seconds"] for r in runs] for name, runs in scan.items()}
    rows = []
    for name, runs in scan.items():
        med = statistics.median(rates[name])
        draws = [r.get("draw_mean", 0) for r in runs if r.get("draw_mean", 0) > 0]
        rows.append([labels[name], f"{max(rates[name]):,.0f} / {med:,.0f}",
                     fmt_ratio(times[name], times[bases.get(name, "none")]),
                     fmt_ratio(times[name], times["noop"])
                     if name in ("thread", "process", "process-nice0") else "-",
                     "-" if name.startswith("none") else fmt_count(runs, "submitted"),
                     "-" if name.startswith("none") else fmt_count(runs, "rendered_during"),
                     f"{statistics.median(draws) * 1e3:.0f}" if draws else "-",
                     f"{statistics.median(r['cpu'] / r['seconds'] for r in runs):.2f}"])
    text += table(["variant", "steps/s (max / median)",
                   "time vs no tracker (min / median; pinned rows: vs pinned)",
                   "vs no-op render", "fits handed on", "rendered during the run", "draw ms",
                   "sampler process CPU / wall"], rows)
    scan_ratio = statistics.median(times["process"]) / statistics.median(times["none"])
    scan_floor = statistics.median(times["process"]) / statistics.median(times["noop"])
    pinned = ""
    if "process-pinned" in times:
        ratio = (statistics.median(times["process-pinned"])
                 / statistics.median(times["none-pinned"]))
        pinned = (f"; pinned, sampler on one CPU and the render process on the other: "
                  f"{ratio:.2f}x ({verdict(ratio <= 1.10)})")

    text += (
        "\n**3. Start-up of the process backend**: first `submit` to first finished render, "
        "minus that render's own time in the render process; *steady*: the same for the "
        "second render (pipe round trip + pickling); *autofit*: this library's render for "
        "the example Gaussian, clock started at `make_fitness` (which pre-starts the "
        "process):\n\n"
    )
    labels = {"figure": "matplotlib render", "autofit": "autofit render (example Gaussian)"}
    rows = []
    for name, runs in startup.items():
        rows.append([labels[name],
                     fmt_times_ms([r["startup"] for r in runs]),
                     fmt_times_ms([r["draw_first"] for r in runs]),
                     fmt_times_ms([r["overhead"] for r in runs]),
                     fmt_times_ms([r["shutdown"] for r in runs])])
    text += table(["render", "start-up ms (min / median)", "first draw ms",
                   "steady overhead ms", "shutdown ms"], rows)
    startup_worst = max(statistics.median(r["startup"] for r in runs)
                        for runs in startup.values())

    text += (
        f"\nGoals (medians): process backend {emcee_ratio:.2f}x no updates with Emcee "
        f"({verdict(emcee_ratio <= 1.10)}, goal <= 1.10x) and {scan_ratio:.2f}x with the "
        f"jitted sampler ({verdict(scan_ratio <= 1.10)}; {scan_floor:.2f}x the tracker with a "
        f"no-op render{pinned}); start-up {startup_worst:.2f} s "
        f"at worst ({verdict(startup_worst < 2.0)}, goal < 2 s).\n"
        f"\nRun time of this benchmark: Emcee {emcee_seconds / 60:.1f} min, jitted sampler "
        f"{scan_seconds / 60:.1f} min, start-up {startup_seconds / 60:.1f} min.\n"
    )
    return text


def fmt_times_ms(values: list[float]) -> str:
    lo, med = min_median(values)
    return f"{lo * 1e3:.0f} / {med * 1e3:.0f}"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(run(repeats=args.repeats, quick=args.quick))
