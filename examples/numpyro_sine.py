"""NumPyro's NUTS fitting a noisy sine wave, with a live picture of the best fit.

    python examples/numpyro_sine.py [--chains 2 --chain-method vectorized]

The only line that is about live pictures is ``live_kernel(NUTS(model), draw)``;
the rest is an ordinary NumPyro script. ``fit.png`` shows the data and the
best model so far while the chains run; ``kernel.close(mcmc)`` waits for the
run and draws the final best (the highest-density sample the run returned) at
full resolution. The last line printed is a JSON summary, read by the tests and
``benchmarks/bench_samplers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if "--chain-method" in sys.argv and "parallel" in sys.argv:  # before JAX starts: 2 CPU devices
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from matplotlib.figure import Figure
from numpyro.infer import MCMC, NUTS

TRUTH = {"amplitude": 1.5, "frequency": 2.0, "phase": 0.7, "offset": 0.3, "noise": 0.4}


def model(x, y=None):
    amplitude = numpyro.sample("amplitude", dist.HalfNormal(3.0))
    frequency = numpyro.sample("frequency", dist.Uniform(1.0, 3.0))
    phase = numpyro.sample("phase", dist.Uniform(-np.pi, np.pi))
    offset = numpyro.sample("offset", dist.Normal(0.0, 2.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    curve = numpyro.deterministic("curve", amplitude * jax.numpy.sin(frequency * x + phase)
                                  + offset)
    numpyro.sample("y", dist.Normal(curve, noise), obs=y)


def simulate(points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 2 * np.pi, points)).astype(np.float32)
    t = TRUTH
    y = t["amplitude"] * np.sin(t["frequency"] * x + t["phase"]) + t["offset"]
    return x, (y + rng.normal(0.0, t["noise"], points)).astype(np.float32)


class SineFigure:
    """``draw(best)``: the data and the best curve (``best.parameters`` holds the
    model's sites, constrained, including the deterministic ``curve``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __call__(self, best) -> Figure:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(self.x, self.y, ".", ms=2, color="0.6", label="data")
        ax.plot(self.x, best.parameters["curve"], color="C3", lw=2, label="best fit")
        p = best.parameters
        ax.set_title(f"step {best.step}: log density {best.log_likelihood:,.1f}\n"
                     f"A={float(p['amplitude']):.2f}  f={float(p['frequency']):.2f}  "
                     f"phase={float(p['phase']):.2f}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        return fig


def run(*, hook: str = "draw", chains: int = 1, chain_method: str = "sequential",
        warmup: int = 500, samples: int = 1000, points: int = 500, backend: str = "process",
        image: str = "fit.png", seed: int = 0) -> dict:
    """One MCMC run; ``hook`` is ``off`` (plain NUTS), ``noop`` or ``draw``."""
    from autofit_jaxviz.numpyro import live_kernel

    x, y = simulate(points, seed)
    figure = SineFigure(x, y)
    kernel = NUTS(model)
    if hook != "off":
        draw = figure if hook == "draw" else _no_draw
        kernel = live_kernel(kernel, draw, image=image, backend=backend)  # <- the one line
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method=chain_method, progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), x, y=y, extra_fields=("potential_energy",))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - t0
    energy = np.asarray(mcmc.get_extra_fields()["potential_energy"])
    best = int(np.argmin(energy))
    summary = {"seconds": seconds, "best_log_density": float(-energy[best]),
               "best": {k: float(np.asarray(v)[best]) for k, v in mcmc.get_samples().items()
                        if np.ndim(np.asarray(v)[best]) == 0}}
    if hook != "off":
        during = kernel.view.stats.rendered
        kernel.close(mcmc)
        drawn = kernel.view.drawn
        summary.update(
            images_during_run=during, images=kernel.view.stats.rendered,
            render_seconds=kernel.view.stats.mean_render_seconds,
            callbacks=kernel.callbacks,
            drawn_log_density=None if drawn is None else drawn.log_likelihood,
            drawn={k: float(v) for k, v in drawn.parameters.items() if np.ndim(v) == 0}
            if drawn is not None else None)
    return summary


def _no_draw(best) -> str:
    """The hook's own cost: no picture (a path that is always there, never written)."""
    return os.devnull


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hook", choices=("off", "noop", "draw"), default="draw")
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--chain-method", choices=("sequential", "vectorized", "parallel"),
                        default="sequential")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--backend", choices=("process", "thread"), default="process")
    parser.add_argument("--image", default="fit.png")
    args = parser.parse_args(argv)
    summary = run(hook=args.hook, chains=args.chains, chain_method=args.chain_method,
                  warmup=args.warmup, samples=args.samples, points=args.points,
                  backend=args.backend, image=args.image)
    if args.hook != "off":
        print(f"{summary['images']} pictures of the best fit in {Path(args.image).resolve()}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
