"""BlackJAX's stock adaptive tempered SMC fitting the noisy sine wave of
``blackjax_sine.py``, drawn live.

    python examples/blackjax_smc_sine.py [--particles 1000]

``live_smc(blackjax.adaptive_tempered_smc, draw)`` is the only line about live
pictures: the algorithm is built, initialised and stepped in a
``jax.lax.while_loop`` (until the temperature reaches 1) as BlackJAX's own
SMC examples do. SMC needs a proper prior to draw its first particles from,
so this model's prior is one. With ``--reference`` the loop also keeps, by
itself, the particle with the highest log posterior it has seen and the step
that found it: the tests compare the last picture with it (the benchmark
leaves it out, since it is the same evaluation the hook adds). The last line
printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import extend_params, resampling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackjax_sine import (  # noqa: E402
    SineFigure,
    close_and_summarise,
    curve,
    no_draw,
    simulate,
)

#: name: (low, high) of a uniform prior, or (mean, sigma) of a normal one
UNIFORM = {"frequency": (1.0, 3.0), "phase": (-np.pi, np.pi)}
NORMAL = {"amplitude": (0.0, 3.0), "offset": (0.0, 2.0), "log_noise": (-1.0, 1.0)}
NAMES = (*NORMAL, *UNIFORM)


def log_prior(p):
    normal = sum(-0.5 * ((p[k] - m) / s) ** 2 for k, (m, s) in NORMAL.items())
    inside = jnp.all(jnp.asarray([(p[k] >= lo) & (p[k] <= hi) for k, (lo, hi) in UNIFORM.items()]))
    return jnp.where(inside, normal, -jnp.inf)


def make_loglikelihood(x, y):
    def loglikelihood(p):
        noise = jnp.exp(p["log_noise"])
        resid = (y - curve(p, x)) / noise
        return -0.5 * jnp.sum(resid**2) - x.size * p["log_noise"]
    return loglikelihood


def prior_draws(key, particles: int) -> dict:
    keys = dict(zip(NAMES, jax.random.split(key, len(NAMES)), strict=True))
    draws = {k: m + s * jax.random.normal(keys[k], (particles,)) for k, (m, s) in NORMAL.items()}
    draws.update({k: jax.random.uniform(keys[k], (particles,), minval=lo, maxval=hi)
                  for k, (lo, hi) in UNIFORM.items()})
    return {k: draws[k].astype(float) for k in NAMES}


def run(*, hook: str = "draw", particles: int = 1000, mcmc_steps: int = 10,
        points: int = 500, backend: str = "process", image: str = "fit.png",
        seed: int = 0, reference: bool = False) -> dict:
    """Adaptive tempered SMC with HMC moves; ``hook`` is ``off``, ``noop`` or ``draw``."""
    from autofit_jaxviz.blackjax import live_smc

    x, y = simulate(points, seed)
    x, y = jnp.asarray(x, float), jnp.asarray(y, float)
    loglikelihood = make_loglikelihood(x, y)
    smc = blackjax.adaptive_tempered_smc
    if hook != "off":
        draw = SineFigure(np.asarray(x), np.asarray(y)) if hook == "draw" else no_draw
        smc = live_smc(blackjax.adaptive_tempered_smc, draw, image=image,  # the one line
                       backend=backend,
                       transform=lambda p: {**p, "noise": jnp.exp(p["log_noise"]),
                                            "curve": curve(p, x)})
    hmc_parameters = extend_params({"step_size": 1e-2, "inverse_mass_matrix": jnp.ones(len(NAMES)),
                                    "num_integration_steps": 20})  # shared by the particles
    algorithm = smc(log_prior, loglikelihood, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                    hmc_parameters, resampling.systematic, 0.5, num_mcmc_steps=mcmc_steps)
    log_posterior = jax.vmap(lambda p: log_prior(p) + loglikelihood(p))

    def best_of(particles, step):  # what the loop itself keeps: the reference for the tests
        scores = log_posterior(particles)
        scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
        i = jnp.argmax(scores)
        return scores[i], jax.tree.map(lambda leaf: leaf[i], particles), step

    def keep_best(best, particles, step):
        if not reference:
            return best
        new = best_of(particles, step)
        return jax.tree.map(lambda n, o: jnp.where(new[0] > best[0], n, o), new, best)

    @jax.jit
    def sample(key):
        state = algorithm.init(prior_draws(key, particles))

        def step(carry):
            key, state, steps, best = carry
            key, subkey = jax.random.split(key)
            state, _ = algorithm.step(subkey, state)
            return key, state, steps + 1, keep_best(best, state.particles, steps + 1)

        best = best_of(state.particles, 0) if reference else ()
        return jax.lax.while_loop(lambda c: c[1].tempering_param < 1, step,
                                  (key, state, 0, best))

    t0 = time.perf_counter()
    _, state, steps, best = sample(jax.random.PRNGKey(seed))
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    summary = {"seconds": seconds, "smc_steps": int(steps)}
    if reference:
        score, particle, found = best
        summary.update(best_log_density=float(score), best_step=int(found),
                       best={k: float(v) for k, v in particle.items()})
    if hook != "off":
        summary.update(close_and_summarise(smc, state, NAMES))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hook", choices=("off", "noop", "draw"), default="draw")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--mcmc-steps", type=int, default=10)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--backend", choices=("process", "thread"), default="process")
    parser.add_argument("--image", default="fit.png")
    parser.add_argument("--reference", action="store_true",
                        help="also keep the best particle in the loop itself (for the tests)")
    args = parser.parse_args(argv)
    for name in ("particles", "mcmc_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, "
                         f"got {getattr(args, name)}")
    summary = run(hook=args.hook, particles=args.particles, mcmc_steps=args.mcmc_steps,
                  points=args.points, backend=args.backend, image=args.image,
                  reference=args.reference)
    if args.hook != "off":
        print(f"{summary['images']} pictures of the best fit in {Path(args.image).resolve()}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
