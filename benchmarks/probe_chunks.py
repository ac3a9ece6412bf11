"""Probe: BlackJAX NUTS sampling with the callback in the loop, or read between chunks.

    python benchmarks/probe_chunks.py [--steps 11000] [--repeats 8]

Not part of ``make bench`` (``bench_samplers.py`` has the user's view, a fresh
interpreter per run). One process, one warm-up, then four sampling runs from
the same state alternated, each as a user calls it (compilation included),
with a no-op draw in a thread:

- ``plain``: ``blackjax.util.run_inference_algorithm`` on ``blackjax.nuts``;
- ``in_loop``: the same on ``live_algorithm(blackjax.nuts, ...)`` (a callback in the loop);
- ``chunks``: ``reports="between_chunks"``, ``nuts.run_inference_algorithm`` (chunks of ~0.5 s);
- ``chunks_fixed``: the same in 20 chunks of equal length.

For each run: wall time and the process's CPU time over wall time (about 2.0
when XLA's second CPU thread stays busy, see ``probe_callback_threads.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "benchmarks")]

import blackjax  # noqa: E402
import blackjax_sine  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import alternate_cpu, busy_thread_lines  # noqa: E402
from blackjax.util import run_inference_algorithm  # noqa: E402

from autofit_jaxviz.blackjax import live_algorithm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=11000)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)
    steps = args.steps
    x, y = (jnp.asarray(a, float) for a in blackjax_sine.simulate(500))
    logdensity = blackjax_sine.make_logdensity(x, y)
    start = {k: jnp.asarray(v, float) for k, v in blackjax_sine.START.items()}
    (warm, parameters), _ = blackjax.window_adaptation(blackjax.nuts, logdensity).run(
        jax.random.PRNGKey(0), start, num_steps=1000)
    plain = blackjax.nuts(logdensity, **parameters)
    folder = tempfile.mkdtemp(prefix="afjv-probe-chunks-")
    live = {}
    for reports in ("in_loop", "between_chunks"):
        nuts = live_algorithm(blackjax.nuts, blackjax_sine.no_draw, backend="thread",
                              image=f"{folder}/{reports}.png", history=False, reports=reports)
        sampler = nuts(logdensity, **parameters)
        live[reports] = (nuts, sampler, sampler.init(warm.position))
    chunked, sampler, state = live["between_chunks"]
    variants = {
        "plain": lambda key: run_inference_algorithm(key, plain, steps, initial_state=warm),
        "in_loop": lambda key: run_inference_algorithm(key, live["in_loop"][1], steps,
                                                       initial_state=live["in_loop"][2]),
        "chunks": lambda key: chunked.run_inference_algorithm(key, sampler, steps,
                                                              initial_state=state),
        "chunks_fixed": lambda key: chunked.run_inference_algorithm(
            key, sampler, steps, initial_state=state, chunk_steps=-(-steps // 20)),
    }
    runs = alternate_cpu({name: lambda repeat, run=run: run(jax.random.PRNGKey(repeat + 1))
                          for name, run in variants.items()}, args.repeats, jax.block_until_ready)
    for nuts, _, _ in live.values():
        nuts.close()
    print(f"jax {jax.__version__}, blackjax {blackjax.__version__}, {steps} NUTS steps after "
          f"1,000 of warm-up, {args.repeats} runs each, alternated")
    print("\n".join(busy_thread_lines(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
