"""A real PyAutoGalaxy fit with live quick updates (issue #16).

autogalaxy's own ``AnalysisImaging`` (JAX likelihood on the CPU) fitting a
Sersic galaxy to a simulated 40x40 imaging dataset (``tests/autogalaxy_helpers.py``)
with ``af.DynestyStatic`` stopped after ``MAXCALL`` likelihood evaluations (the
same work in every variant, about two minutes here without updates), a quick
update due every ``CADENCE`` evaluations,
autogalaxy's own ``fit.png`` visualizer. Variants, interleaved, each in a fresh
interpreter: no quick updates; autofit synchronous; autofit's background thread
(which crashes at Dynesty's first checkpoint) and the same patched by hand;
this library's thread and process backends at the old settings (no render
budget, the visualizer's own dpi) and at the new defaults (``render_budget``,
``preview_dpi`` from ``config/general.yaml``), and the new defaults with a
quick update due every second (``quick_update_seconds: 1``, which replaces
the count), with the default budget and with ``render_budget: 0.5``.
Reported: ``search.fit`` wall time, images written while the search ran
(this library draws only a new best, so each is distinct), how many new
maximum likelihoods the fit found and how many distinct ones stood when a
quick update fell due (the ceiling on distinct images), the median time a
picture took, and the render's measured share of one core (``render_share``:
a render process's CPU time, a thread's wall time).

    python benchmarks/run.py --only autogalaxy [--quick] [--repeats N]
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header, min_median, table
from bench_autofit import fmt_ratio, fmt_times, interleave, quiet, run_child

ROOT = Path(__file__).resolve().parents[1]
CADENCE = 1000
NLIVE, MAXCALL = 50, 40000
VARIANTS = ["none", "sync", "autofit-bg", "autofit-bg-patched", "thread-old", "process-old",
            "thread", "process", "process-b50", "process-s1", "process-s1-b50"]
LABELS = {
    "none": "no quick updates",
    "sync": "autofit synchronous",
    "autofit-bg": "autofit background thread",
    "autofit-bg-patched": "autofit background thread, patched by hand to survive the checkpoint",
    "thread-old": "autofit_jaxviz thread, old settings (no budget, full dpi)",
    "process-old": "autofit_jaxviz process, old settings (no budget, full dpi)",
    "thread": "autofit_jaxviz thread, new defaults",
    "process": "autofit_jaxviz process, new defaults",
    "process-b50": "autofit_jaxviz process, new defaults but render_budget 0.5",
    "process-s1": "autofit_jaxviz process, new defaults, quick_update_seconds 1",
    "process-s1-b50": "autofit_jaxviz process, quick_update_seconds 1 and render_budget 0.5",
}
#: the settings each of this library's variants changes from the defaults
OPTIONS = {"-old": {"render_budget": 1.0, "preview_dpi": 0}, "-b50": {"render_budget": 0.5},
           "-s1": {"quick_update_seconds": 1.0},
           "-s1-b50": {"quick_update_seconds": 1.0, "render_budget": 0.5}}


def galaxy_fit(variant: str, nlive: int, cadence: int, maxcall: int) -> dict[str, Any]:
    """One DynestyStatic fit (runs in a fresh interpreter, its cwd a temporary folder)."""
    quiet()
    sys.path.insert(0, str(ROOT / "tests"))
    import autofit as af
    import autogalaxy as ag
    from autogalaxy_helpers import sersic_imaging, sersic_model
    from autonerves import conf

    output = Path.cwd() / "output"
    conf.instance.output_path = str(output)
    if variant.startswith("autofit-bg"):
        conf.instance["general"]["updates"]["quick_update_background"] = True
    if variant == "autofit-bg-patched":
        from autofit.non_linear.fitness import Fitness

        original_state = Fitness.__getstate__

        def without_worker(self):  # the hand patch: Dynesty's checkpoint skips the thread
            state = original_state(self)
            state["_background_quick_update"] = None
            return state

        Fitness.__getstate__ = without_worker
    record: dict[str, Any] = {}
    ours = variant not in ("none", "sync", "autofit-bg", "autofit-bg-patched")
    if ours:
        import autofit_jaxviz.autofit as live
        import autofit_jaxviz.autofit.hub as hub_module

        backend, _, suffix = variant.partition("-")
        live.enable(background=True, backend=backend, **OPTIONS.get("-" + suffix, {}))
        original_close = hub_module.Hub.close

        def close(hub, *args):  # when the search stops: what was drawn while it ran
            stats = hub.worker.stats
            record.update(during=stats.rendered, share=stats.render_share,
                          draw_s=stats.mean_render_seconds)
            return original_close(hub, *args)

        hub_module.Hub.close = close
        # the ceiling on distinct images: new maximum likelihoods in the whole
        # fit, and the distinct ones standing when a quick update fell due
        bests: list[float] = []
        at_ticks: set[float] = set()
        original_improved, original_due = hub_module.Hub.improved, hub_module.Hub.due

        def improved(hub, vector, log_likelihood):
            bests.append(float(log_likelihood))
            return original_improved(hub, vector, log_likelihood)

        def due(hub, vector, log_likelihood, step):
            at_ticks.add(float(log_likelihood))
            return original_due(hub, vector, log_likelihood, step)

        hub_module.Hub.improved, hub_module.Hub.due = improved, due
        original_draw_result = hub_module.Hub.draw_result

        def draw_result(hub, vector, log_likelihood):  # was the last picture the result's?
            redrawn = original_draw_result(hub, vector, log_likelihood)
            record["final_was_best"] = not redrawn
            return redrawn

        hub_module.Hub.draw_result = draw_result
    times: list[float] = []
    if variant in ("sync", "autofit-bg", "autofit-bg-patched"):
        from autofit.non_linear.fitness import Fitness

        original_update = ag.AnalysisImaging.perform_quick_update

        def timed(self, paths, instance):
            t0 = time.perf_counter()
            try:
                return original_update(self, paths, instance)
            finally:
                times.append(time.perf_counter() - t0)

        ag.AnalysisImaging.perform_quick_update = timed
        original_shutdown = Fitness.shutdown_quick_update

        def shutdown(self):
            record.setdefault("during", len(times))
            return original_shutdown(self)

        Fitness.shutdown_quick_update = shutdown
    analysis = ag.AnalysisImaging(dataset=sersic_imaging(), use_jax=True)
    search = af.DynestyStatic(name=f"galaxy_{variant}", nlive=nlive, silence=True, maxcall=maxcall,
                              iterations_per_quick_update=None if variant == "none" else cadence)
    t0 = time.perf_counter()
    try:
        search.fit(model=sersic_model(), analysis=analysis)
    except Exception as error:  # autofit's background thread at Dynesty's checkpoint
        record["error"] = "".join(traceback.format_exception_only(error)).strip()[-200:]
    record["wall"] = time.perf_counter() - t0
    if times:
        record["draw_s"] = sorted(times)[len(times) // 2]
    record.setdefault("during", 0)
    if ours:
        record.update(bests=len(bests), bests_at_ticks=len(at_ticks))
    return record


def run(repeats: int = 3, quick: bool = False) -> str:
    nlive, cadence, maxcall = (30, 200, 3000) if quick else (NLIVE, CADENCE, MAXCALL)
    repeats = 1 if quick else repeats
    results = interleave({v: (lambda v=v: run_child(
        "bench_autogalaxy", "galaxy_fit", {"variant": v, "nlive": nlive, "cadence": cadence,
                                                "maxcall": maxcall}))
        for v in VARIANTS}, repeats)
    base = [r["wall"] for r in results["none"]]
    rows = []
    for name, runs in results.items():
        walls = [r["wall"] for r in runs]
        errors = sorted({r["error"] for r in runs if "error" in r})
        during = sorted(r["during"] for r in runs)[len(runs) // 2]
        draws = [r["draw_s"] for r in runs if r.get("draw_s")]
        shares = [r["share"] for r in runs if "share" in r]
        finals = [r["final_was_best"] for r in runs if "final_was_best" in r]
        bests = sorted(r["bests"] for r in runs if "bests" in r)
        ticks = sorted(r["bests_at_ticks"] for r in runs if "bests_at_ticks" in r)
        rows.append([LABELS[name], fmt_times(walls), fmt_ratio(walls, base), str(during),
                     f"{bests[len(bests) // 2]} / {ticks[len(ticks) // 2]}" if bests else "-",
                     f"{min_median(draws)[1]:.2f}" if draws else "-",
                     f"{min_median(shares)[1]:.2f}" if shares else "-",
                     f"{sum(finals)} of {len(finals)}" if finals else "-",
                     "; ".join(errors) or "-"])
    command = "python benchmarks/run.py --only autogalaxy" + (" --quick" if quick else "")
    return (header("A real PyAutoGalaxy imaging fit (DynestyStatic, JAX likelihood on CPU)",
                   command)
            + f"\nautogalaxy's `AnalysisImaging` on a simulated 40x40 Sersic dataset, "
            f"`DynestyStatic(nlive={nlive}, maxcall={maxcall})` (the same number of likelihood "
            f"evaluations in every variant), a quick update due every {cadence} evaluations "
            "(every second in the `quick_update_seconds 1` variants), "
            f"autogalaxy's own `fit.png`; {repeats} repeat(s), variants interleaved, each in a "
            "fresh interpreter.\n\n"
            + table(["variant", "wall s (min / median)", "vs no updates (min / median)",
                     "images during the run (median)",
                     "new bests in the fit / distinct at the ticks (medians, each its own)",
                     "s per image (median)",
                     "render share (median)", "last picture is the result's best", "error"],
                     rows))
