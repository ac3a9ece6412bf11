"""Probe: does a host callback anywhere in a jitted NUTS loop change how XLA's CPU runtime runs it?

    python benchmarks/probe_callback_threads.py [--steps 5000] [--repeats 8]

Not part of ``make bench`` (it measures XLA, not this library): one process
compiles a 5,000-step BlackJAX NUTS ``lax.scan`` on the BlackJAX example's
model in several variants, then runs them alternately, so every variant sees
the same machine and the same process. For each run it prints the wall time
and the process's CPU time over wall time: 1.0 means one thread worked, 2.0
that a second XLA thread was busy for the whole run. Variants:

- ``plain``: NUTS alone;
- ``cond+callback``: plus a ``lax.cond`` that never fires, holding a ``jax.debug.callback``;
- ``cond``: plus the same ``lax.cond`` holding ordinary arithmetic instead;
- ``tracker``: plus this library's ``BestFitTracker.update`` (what the adapters add per step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "benchmarks")]

import blackjax  # noqa: E402
import blackjax_sine  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import alternate_cpu, busy_thread_lines  # noqa: E402

from autofit_jaxviz.device.tracker import BestFitTracker  # noqa: E402

VARIANTS = ("plain", "cond+callback", "cond", "tracker")


def build(variant: str, steps: int):
    x, y = (jnp.asarray(a, float) for a in blackjax_sine.simulate(500))
    logdensity = blackjax_sine.make_logdensity(x, y)
    nuts = blackjax.nuts(logdensity, step_size=0.05, inverse_mass_matrix=jnp.ones(5))
    tracker = BestFitTracker(lambda best: None)
    start = {k: jnp.asarray(v, float) for k, v in blackjax_sine.START.items()}
    never = jnp.asarray(1e30, float)

    def run(key):
        state = nuts.init(start)
        extra = tracker.init(state.position, state.logdensity) if variant == "tracker" \
            else jnp.asarray(0.0, float)

        def step(carry, step_key):
            state, extra = carry
            state, _ = nuts.step(step_key, state)
            if variant == "cond+callback":
                jax.lax.cond(state.logdensity > never, lambda v: jax.debug.callback(print, v),
                             lambda v: None, state.logdensity)
            elif variant == "cond":
                extra = jax.lax.cond(state.logdensity > never, lambda v: jnp.sin(v) + extra,
                                     lambda v: extra, state.logdensity)
            elif variant == "tracker":
                extra = tracker.update(extra, state.position, state.logdensity)
            return (state, extra), None

        (state, _), _ = jax.lax.scan(step, (state, extra), jax.random.split(key, steps))
        return state.logdensity

    return jax.jit(run).lower(jax.random.key(0)).compile()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)
    programs = {v: build(v, args.steps) for v in VARIANTS}
    runs = alternate_cpu({v: lambda repeat, p=p: p(jax.random.key(repeat))
                          for v, p in programs.items()}, args.repeats, jax.block_until_ready)
    print(f"jax {jax.__version__}, {args.steps} NUTS steps, {args.repeats} runs each, alternated")
    print("\n".join(busy_thread_lines(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
