"""BlackJAX's stock NUTS warm-up and loop fitting a noisy sine wave, drawn live.

    python examples/blackjax_sine.py [--chains 4] [--reports between_chunks]

``live_algorithm(blackjax.nuts, draw)`` is the only line about live pictures:
``blackjax.window_adaptation`` and ``blackjax.util.run_inference_algorithm``
(or a ``jax.vmap`` of the sampler's step over chains) are used as they are.
The ``transform`` runs on the device, only when a new best is reported: it
hands ``draw`` the noise on its own scale and the model curve. With
``--reports between_chunks`` no host callback runs inside the jitted loops:
the sampling goes through ``nuts.run_inference_algorithm`` (the arguments
and samples of BlackJAX's, run in chunks), which draws between the chunks. The last line
printed is a JSON summary, read by the tests and ``benchmarks/bench_samplers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.util import run_inference_algorithm
from matplotlib.figure import Figure

TRUTH = {"amplitude": 1.5, "frequency": 2.0, "phase": 0.7, "offset": 0.3, "noise": 0.4}
START = {"amplitude": 1.0, "frequency": 1.8, "phase": 0.0, "offset": 0.0, "log_noise": 0.0}


def simulate(points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 2 * np.pi, points)).astype(np.float32)
    t = TRUTH
    y = t["amplitude"] * np.sin(t["frequency"] * x + t["phase"]) + t["offset"]
    return x, (y + rng.normal(0.0, t["noise"], points)).astype(np.float32)


def curve(p, x):
    return p["amplitude"] * jnp.sin(p["frequency"] * x + p["phase"]) + p["offset"]


def make_logdensity(x, y):
    def logdensity(p):
        noise = jnp.exp(p["log_noise"])
        resid = (y - curve(p, x)) / noise
        prior = -0.5 * (p["amplitude"] / 3) ** 2 - 0.5 * (p["offset"] / 2) ** 2
        return -0.5 * jnp.sum(resid**2) - x.size * p["log_noise"] + prior
    return logdensity


class SineFigure:
    """``draw(best)``: the data and the best curve (from the device-side transform)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __call__(self, best) -> Figure:
        p = best.parameters
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(self.x, self.y, ".", ms=2, color="0.6", label="data")
        ax.plot(self.x, p["curve"], color="C0", lw=2, label="best fit")
        ax.set_title(f"step {best.step}: log density {best.log_likelihood:,.1f}\n"
                     f"A={float(p['amplitude']):.2f}  f={float(p['frequency']):.2f}  "
                     f"noise={float(p['noise']):.2f}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        return fig


def run(*, hook: str = "draw", chains: int = 1, warmup: int = 500, samples: int = 1000,
        points: int = 500, backend: str = "process", image: str = "fit.png",
        seed: int = 0, reports: str = "in_loop") -> dict:
    """Warm-up then sampling; ``hook`` is ``off`` (plain blackjax.nuts), ``noop`` or ``draw``.
    With ``chains`` > 1 the sampling is a ``jax.vmap`` of the step over chains.
    ``reports="between_chunks"``: no callback in the loops; the sampling runs
    through ``nuts.run_inference_algorithm``, which draws between its chunks."""
    from autofit_jaxviz.blackjax import live_algorithm

    if reports != "in_loop" and hook == "off":
        raise ValueError(f"reports={reports!r} needs the hook on (hook='noop' or 'draw')")
    x, y = simulate(points, seed)
    # JAX's default float (float64 with jax_enable_x64, as autofit sets it): the
    # state keeps one dtype, which NUTS's internal conds require
    x, y = jnp.asarray(x, float), jnp.asarray(y, float)
    logdensity = make_logdensity(x, y)
    nuts = blackjax.nuts
    if hook != "off":
        draw = SineFigure(np.asarray(x), np.asarray(y)) if hook == "draw" else no_draw
        nuts = live_algorithm(blackjax.nuts, draw, image=image, backend=backend,  # the one line
                              transform=lambda p: {**p, "noise": jnp.exp(p["log_noise"]),
                                                   "curve": curve(p, x)}, reports=reports)
    t0 = time.perf_counter()
    key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(seed))
    warmup_run = blackjax.window_adaptation(nuts, logdensity)
    start = {name: jnp.asarray(value, float) for name, value in START.items()}
    (state, parameters), _ = warmup_run.run(key_warmup, start, num_steps=warmup)
    sampler = nuts(logdensity, **parameters)
    if hook != "off" and reports == "between_chunks":  # one chain: the same samples
        keys = key_sample if chains == 1 else jax.random.split(key_sample, chains)
        states = state if chains == 1 else jax.vmap(lambda _: state)(jnp.arange(chains))
        state, (history, _) = nuts.run_inference_algorithm(keys, sampler, samples,
                                                           initial_state=states)
        logdensities, positions = history.logdensity, history.position
    elif chains == 1:
        state, (history, _) = run_inference_algorithm(key_sample, sampler, samples,
                                                      initial_state=state)
        logdensities, positions = history.logdensity, history.position
    else:
        states = jax.vmap(lambda _: state)(jnp.arange(chains))

        @jax.jit
        def sample_chains(states, key):
            def one_step(states, key):
                states, _ = jax.vmap(sampler.step)(jax.random.split(key, chains), states)
                return states, (states.logdensity, states.position)
            return jax.lax.scan(one_step, states, jax.random.split(key, samples))

        state, (logdensities, positions) = sample_chains(states, key_sample)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    logdensities = np.asarray(logdensities).reshape(-1)
    best = int(np.argmax(logdensities))
    summary = {"seconds": seconds, "best_log_density": float(logdensities[best]),
               "best": {k: float(np.asarray(v).reshape(-1)[best]) for k, v in positions.items()}}
    if hook != "off":
        summary.update(close_and_summarise(nuts, state, START))
    return summary


def close_and_summarise(live, state, names) -> dict:
    """Close a live algorithm after the run; what it drew, for the JSON summary."""
    during = live.view.stats.rendered
    live.close(state)
    drawn = live.view.drawn
    return {"images_during_run": during, "images": live.view.stats.rendered,
            "render_seconds": live.view.stats.mean_render_seconds, "callbacks": live.callbacks,
            "drawn_step": None if drawn is None else drawn.step,
            "drawn_log_density": None if drawn is None else drawn.log_likelihood,
            "drawn": None if drawn is None else {k: float(drawn.parameters[k]) for k in names}}


def no_draw(best) -> str:
    """The hook's own cost: no picture (a path that is always there, never written)."""
    return os.devnull


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hook", choices=("off", "noop", "draw"), default="draw")
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--backend", choices=("process", "thread"), default="process")
    parser.add_argument("--image", default="fit.png")
    parser.add_argument("--reports", choices=("in_loop", "between_chunks"), default="in_loop",
                        help="between_chunks: no host callback inside the jitted loops")
    args = parser.parse_args(argv)
    if args.chains < 1:
        parser.error(f"--chains must be a positive integer, got {args.chains}")
    if args.reports != "in_loop" and args.hook == "off":
        parser.error(f"--reports {args.reports} needs the hook on (--hook noop or draw)")
    summary = run(hook=args.hook, chains=args.chains, warmup=args.warmup, samples=args.samples,
                  points=args.points, backend=args.backend, image=args.image,
                  reports=args.reports)
    if args.hook != "off":
        print(f"{summary['images']} pictures of the best fit in {Path(args.image).resolve()}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
