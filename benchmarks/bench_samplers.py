"""Other people's jitted loops with a live picture: NumPyro, BlackJAX, optax (issue #17).

Each example in ``examples/`` (``numpyro_sine.py``: NumPyro's ``MCMC`` with
NUTS; ``blackjax_sine.py``: BlackJAX's stock ``window_adaptation`` and
``run_inference_algorithm``; ``blackjax_smc_sine.py``: its adaptive tempered
SMC in a ``while_loop``; ``optax_multistart.py``: Adam from 32 vmapped
starts in one jitted scan, sized so that its loss goes down for most of the
run: at the example's defaults the best start converges in a few hundred updates)
runs as a user runs it, a fresh interpreter per run, in three variants
interleaved: the hook off (the plain library), on with a no-op draw, on with
its real matplotlib draw in the render process (the default backend); BlackJAX
NUTS also with ``reports="between_chunks"`` (no host callback in its loops,
the sampling drawn between chunks of ``nuts.run_inference_algorithm``).
Reported: the run's wall time (``MCMC.run`` / warm-up and sampling / the
jitted optimisation, compilation included, as a user waits for it), pictures
drawn while it ran, the mean time per picture, host callbacks.

    python benchmarks/run.py --only samplers [--quick] [--repeats N]
    python benchmarks/bench_samplers.py --case "BlackJAX NUTS" --repeats 5
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, min_median, table
from bench_autofit import fmt_ratio, fmt_times, interleave

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "NumPyro NUTS (1 chain, 10,000 warm-up + 20,000 samples)":
        ("numpyro_sine.py", ["--warmup", "10000", "--samples", "20000"]),
    "BlackJAX NUTS (window_adaptation 11,000 + run_inference_algorithm 22,000)":
        ("blackjax_sine.py", ["--warmup", "11000", "--samples", "22000"]),
    "BlackJAX adaptive tempered SMC (500 particles, 10 HMC moves per step)":
        ("blackjax_smc_sine.py", ["--particles", "500"]),
    "optax Adam (32 vmapped starts, 20,000 points, learning rate 5e-4, 3,000 updates)":
        ("optax_multistart.py", ["--points", "20000", "--steps", "3000",
                                 "--learning-rate", "5e-4"]),
}
QUICK = {"numpyro_sine.py": ["--warmup", "100", "--samples", "100"],
         "blackjax_sine.py": ["--warmup", "100", "--samples", "100"],
         "blackjax_smc_sine.py": ["--particles", "100", "--mcmc-steps", "2"],
         "optax_multistart.py": ["--steps", "1000"]}
#: variant -> (the example's --hook, its other arguments)
VARIANTS = {"off": ("off", []), "noop": ("noop", []), "draw": ("draw", []),
            "chunks": ("draw", ["--reports", "between_chunks"])}
#: the variants each example runs (BlackJAX NUTS also without a callback in its loops)
HOOKS = {script: ["off", "noop", "draw"] for script, _ in CASES.values()}
HOOKS["blackjax_sine.py"] = ["off", "noop", "draw", "chunks"]
LABELS = {"off": "hook off", "noop": "hook on, no-op draw",
          "draw": "hook on, real draw (render process)",
          "chunks": "hook on, real draw, reports between chunks (no callback in the loops)"}


def run_example(script: str, args: list[str], variant: str, workdir: str) -> dict[str, Any]:
    hook, extra = VARIANTS[variant]
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, *extra,
                           "--hook", hook], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(extra)} --hook {hook} exited with "
                           f"{proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(repeats: int = 3, quick: bool = False, case: str | None = None) -> str:
    """``case``: only the runs whose name contains it (e.g. ``"BlackJAX NUTS"``)."""
    import tempfile

    repeats = 1 if quick else repeats
    chosen = {name: value for name, value in CASES.items() if case is None or case in name}
    if not chosen:
        raise ValueError(f"no run named like {case!r}; the runs are: {', '.join(CASES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="afjv-samplers-") as workdir:
        cases = {}
        for name, (script, args) in chosen.items():
            args = QUICK[script] if quick else args
            for hook in HOOKS[script]:
                cases[(name, hook)] = (lambda s=script, a=args, h=hook:
                                       run_example(s, a, h, workdir))
        results = interleave(cases, repeats)
    for name, (script, _) in chosen.items():
        base = [r["seconds"] for r in results[(name, "off")]]
        for hook in HOOKS[script]:
            runs = results[(name, hook)]
            walls = [r["seconds"] for r in runs]
            during = sorted(r.get("images_during_run", 0) for r in runs)[len(runs) // 2]
            draws = [r["render_seconds"] for r in runs if r.get("render_seconds")]
            calls = sorted(r.get("callbacks", 0) for r in runs)[len(runs) // 2]
            # the SMC example runs without its in-loop reference here (the
            # tests check its last picture): its column stays "-"
            final = [math.isclose(r.get("drawn_log_density", r.get("drawn_loss")),
                                  r.get("best_log_density", r.get("best_loss")), rel_tol=1e-6)
                     for r in runs if hook != "off"
                     and r.get("best_log_density", r.get("best_loss")) is not None]
            rows.append([name if hook == "off" else "", LABELS[hook], fmt_times(walls),
                         fmt_ratio(walls, base), str(during) if hook != "off" else "-",
                         f"{1000 * min_median(draws)[1]:.0f}" if draws else "-",
                         str(calls) if hook != "off" else "-",
                         f"{sum(final)} of {len(final)}" if final else "-"])
    command = ("python benchmarks/run.py --only samplers" if case is None else
               f"python benchmarks/bench_samplers.py --case {case!r} --repeats {repeats}")
    command += " --quick" if quick else ""
    return (header("NumPyro, BlackJAX and optax runs with a live picture", command)
            + f"\nThe examples in `examples/`, each run in a fresh interpreter, "
            f"{repeats} repeat(s), variants interleaved; wall time of the run itself "
            "(compilation included).\n\n"
            + table(["run", "variant", "wall s (min / median)", "vs hook off (min / median)",
                     "pictures during the run (median)", "ms per picture (median)",
                     "host callbacks (median)", "last picture is the run's best"], rows))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help="only the runs whose name contains this")
    options = parser.parse_args()
    print(run(repeats=options.repeats, quick=options.quick, case=options.case))
