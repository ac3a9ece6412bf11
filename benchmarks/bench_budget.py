"""The render budget on a run that fills every core: optax from 32 vmapped starts (issue #17).

XLA spreads this vectorised loss (32 starts x 20,000 points) over every core,
so each core-second the pictures take comes out of the run. The same run as in
``bench_samplers``: the hook off, then the real draw in the render process at
the default ``render_budget`` and at two smaller ones, interleaved, each in a
fresh interpreter. Reported: wall time, pictures during the run and the
render's measured share of one core (``render_share``).

    python benchmarks/run.py --only budget [--quick] [--repeats N]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, min_median, table
from bench_autofit import fmt_ratio, fmt_times, interleave
from bench_samplers import run_example

ARGS = ["--points", "20000", "--steps", "3000", "--learning-rate", "5e-4"]
QUICK = ["--points", "500", "--steps", "300", "--learning-rate", "5e-3"]
#: variant -> the example's --render-budget (None: the configuration's default)
BUDGETS = {"off": None, "default": None, "0.1": 0.1, "0.05": 0.05}
LABELS = {"off": "hook off", "default": "real draw, default render_budget",
          "0.1": "real draw, render_budget 0.1", "0.05": "real draw, render_budget 0.05"}


def run(repeats: int = 3, quick: bool = False) -> str:
    repeats = 1 if quick else repeats
    args = QUICK if quick else ARGS
    with tempfile.TemporaryDirectory(prefix="afjv-budget-") as workdir:
        cases = {}
        for name, budget in BUDGETS.items():
            extra = [] if budget is None else ["--render-budget", str(budget)]
            hook = "off" if name == "off" else "draw"
            cases[name] = (lambda a=args + extra, h=hook: run_example(
                "optax_multistart.py", a, h, workdir))
        results = interleave(cases, repeats)
    base = [r["seconds"] for r in results["off"]]
    rows = []
    for name, runs in results.items():
        walls = [r["seconds"] for r in runs]
        during = sorted(r.get("images_during_run", 0) for r in runs)[len(runs) // 2]
        shares = [r["render_share"] for r in runs if "render_share" in r]
        rows.append([LABELS[name], fmt_times(walls), fmt_ratio(walls, base),
                     str(during) if name != "off" else "-",
                     f"{min_median(shares)[1]:.2f}" if shares else "-"])
    command = "python benchmarks/run.py --only budget" + (" --quick" if quick else "")
    return (header("The render budget on a run that fills every core (optax)", command)
            + f"\n`examples/optax_multistart.py {' '.join(args)}` (32 vmapped starts), "
            f"{repeats} repeat(s), variants interleaved, each in a fresh interpreter; wall "
            "time of the jitted optimisation (compilation included).\n\n"
            + table(["variant", "wall s (min / median)", "vs hook off (min / median)",
                     "pictures during the run (median)", "render share (median)"], rows))


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
