"""optax's Adam from many starts at once (``jax.vmap``), the best start drawn live.

    python examples/optax_multistart.py [--starts 32 --steps 3000 --learning-rate 0.02]

Fitting a sine's frequency is not convex, so a single start often lands in a
local minimum; 32 starts run side by side in one jitted ``lax.scan``.
``live_optimizer(optax.adam(...), draw)`` is the only line about live
pictures: each ``update`` (given ``value=loss``) keeps the lowest loss on the
device and calls the host at most once per ``every`` updates, with the best
start of the batch. The last line printed is a JSON summary, read by the tests
and ``benchmarks/bench_samplers.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

TRUTH = {"amplitude": 1.5, "frequency": 2.0, "phase": 0.7, "offset": 0.3}


def simulate(points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 2 * np.pi, points)).astype(np.float32)
    t = TRUTH
    y = t["amplitude"] * np.sin(t["frequency"] * x + t["phase"]) + t["offset"]
    return x, (y + rng.normal(0.0, 0.4, points)).astype(np.float32)


def curve(p, x):
    return p["amplitude"] * jnp.sin(p["frequency"] * x + p["phase"]) + p["offset"]


class SineFigure:
    """``draw(best)``: the data and the lowest-loss curve so far."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __call__(self, best) -> Figure:
        p = best.parameters
        model = p["amplitude"] * np.sin(p["frequency"] * self.x + p["phase"]) + p["offset"]
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(self.x, self.y, ".", ms=2, color="0.6", label="data")
        ax.plot(self.x, model, color="C2", lw=2, label="best start")
        ax.set_title(f"update {best.step}: loss {-best.log_likelihood:.4f}  "
                     f"f={float(p['frequency']):.3f}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        return fig


def run(*, hook: str = "draw", starts: int = 32, steps: int = 3000, points: int = 500,
        every: int = 25, learning_rate: float = 2e-2, backend: str = "process",
        image: str = "fit.png", render_budget: float | None = None, seed: int = 0) -> dict:
    """One jitted multi-start optimisation; ``hook`` is ``off``, ``noop`` or ``draw``."""
    from autofit_jaxviz.optax import live_optimizer

    x, y = simulate(points, seed)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p):
        return jnp.mean((curve(p, xj) - yj) ** 2)

    optimizer = optax.adam(learning_rate)
    if hook != "off":
        draw = SineFigure(x, y) if hook == "draw" else _no_draw
        options = {} if render_budget is None else {"render_budget": render_budget}
        optimizer = live_optimizer(optimizer, draw, every=every, image=image,  # the one line
                                   backend=backend, **options)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params, value=loss)
        return (optax.apply_updates(params, updates), state), loss

    @jax.jit
    def fit(params):
        return jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)

    rng = np.random.default_rng(seed + 1)
    starts_ = {"amplitude": jnp.ones(starts), "offset": jnp.zeros(starts),
               "frequency": jnp.asarray(rng.uniform(0.5, 4.0, starts), jnp.float32),
               "phase": jnp.asarray(rng.uniform(-np.pi, np.pi, starts), jnp.float32)}
    t0 = time.perf_counter()
    (params, state), losses = jax.vmap(fit)(starts_)
    jax.block_until_ready(losses)
    seconds = time.perf_counter() - t0
    losses = np.asarray(losses)  # (starts, steps): the loss at the params of each update
    summary = {"seconds": seconds, "best_loss": float(losses.min()),
               "starts_at_best": int(np.sum(losses.min(axis=1) < losses.min() + 1e-3))}
    if hook != "off":
        during = optimizer.view.stats.rendered
        optimizer.close(state)
        drawn = optimizer.view.drawn
        summary.update(images_during_run=during, images=optimizer.view.stats.rendered,
                       render_seconds=optimizer.view.stats.mean_render_seconds,
                       render_share=optimizer.view.stats.render_share,
                       callbacks=optimizer.view.sink.stats().received,
                       drawn_loss=None if drawn is None else -drawn.log_likelihood)
    return summary


def _no_draw(best) -> str:
    """The hook's own cost: no picture (a path that is always there, never written)."""
    return os.devnull


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hook", choices=("off", "noop", "draw"), default="draw")
    parser.add_argument("--starts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=2e-2)
    parser.add_argument("--backend", choices=("process", "thread"), default="process")
    parser.add_argument("--image", default="fit.png")
    parser.add_argument("--render-budget", type=float, default=None,
                        help="share of one core the pictures may take (default: the config's)")
    args = parser.parse_args(argv)
    for name in ("starts", "steps", "every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        parser.error(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    if args.render_budget is not None and not 0 < args.render_budget <= 1:
        parser.error("--render-budget must be a share of one core, > 0 and <= 1, "
                     f"got {args.render_budget}")
    summary = run(hook=args.hook, starts=args.starts, steps=args.steps, points=args.points,
                  every=args.every, learning_rate=args.learning_rate, backend=args.backend,
                  image=args.image, render_budget=args.render_budget)
    if args.hook != "off":
        print(f"{summary['images']} pictures of the best start in {Path(args.image).resolve()}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
