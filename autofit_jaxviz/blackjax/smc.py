"""BlackJAX SMC: a live picture of the best particle, by wrapping the algorithm.

SMC (tested with ``blackjax.adaptive_tempered_smc``, ``tempered_smc`` and
``persistent_sampling_smc``: any whose API takes ``logprior_fn,
loglikelihood_fn`` first and whose state has ``particles``)::

    smc = live_smc(blackjax.adaptive_tempered_smc, draw)        # the one line
    algorithm = smc(logprior, loglikelihood, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                    mcmc_parameters, resampling.systematic, 0.5, num_mcmc_steps=10)
    state = algorithm.init(particles)                           # stock BlackJAX from here on
    ... jax.lax.while_loop(lambda s: s.tempering_param < 1, step, state) ...
    smc.close(state)

The picture shows the particle with the highest log posterior (``logprior +
loglikelihood``, whatever the temperature) in any population the run has had
so far, the starting one included: one vmapped evaluation of both per step,
and a callback only when that best improves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blackjax.base import SamplingAlgorithm

from autofit_jaxviz.blackjax.state import LiveState, _inner_of
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.tracker import BestFitTracker
from autofit_jaxviz.live import LiveView
from autofit_jaxviz.payload import BestFit


class LiveSMC:
    """A BlackJAX SMC algorithm (``blackjax.adaptive_tempered_smc``...) with its
    best particle drawn live. Build it with :func:`live_smc`."""

    def __init__(self, algorithm: Any, view: LiveView, *,
                 transform: Callable[[Any], Any] | None = None) -> None:
        _check_smc(algorithm, transform)
        self.algorithm = algorithm
        self.view = view
        self.transform = transform
        self.tracker = BestFitTracker(view.sink)

    @property
    def callbacks(self) -> int:
        """Host callbacks received so far."""
        return self.view.sink.stats().received

    def __call__(self, logprior_fn: Callable[[Any], Any],
                 loglikelihood_fn: Callable[[Any], Any], *args: Any,
                 **kwargs: Any) -> SamplingAlgorithm:
        """The SMC algorithm, as ``blackjax.adaptive_tempered_smc(logprior_fn,
        loglikelihood_fn, ...)`` builds it, its state a :class:`LiveState`."""
        jax, jnp, _ = load_jax()
        smc = self.algorithm(logprior_fn, loglikelihood_fn, *args, **kwargs)

        def log_posterior(particles: Any) -> Any:
            return jax.vmap(lambda p: logprior_fn(p) + loglikelihood_fn(p))(particles)

        def init(position: Any, *init_args: Any, **init_kwargs: Any) -> LiveState:
            inner = smc.init(position, *init_args, **init_kwargs)
            particles = _particles_of(inner)
            tracker = self.tracker.init(particles, log_posterior(particles))
            # the initial population is step 0, the one after the first step 1
            tracker = tracker._replace(step=tracker.step + 1)
            return LiveState(inner, tracker, jnp.bool_(True))

        def step(rng_key: Any, state: LiveState, *step_args: Any, **step_kwargs: Any) -> Any:
            inner, info = smc.step(rng_key, _inner_of(state, "live_smc step"), *step_args,
                                   **step_kwargs)
            particles = _particles_of(inner)
            tracker = self.tracker.update(state.tracker, particles, log_posterior(particles),
                                          transform=self.transform)
            return LiveState(inner, tracker, state.sampling), info

        return SamplingAlgorithm(init, step)

    def close(self, result: Any = None, timeout: float | None = None) -> bool:
        """After the run: wait for ``result`` (the final state) and the callbacks,
        then draw the final best at full resolution."""
        return self.view.close(timeout, wait_for=result)

    def __repr__(self) -> str:
        return f"LiveSMC({self.algorithm!r}, view={self.view!r})"


def _particles_of(inner: Any) -> Any:
    particles = getattr(inner, "particles", None)
    if particles is None:
        raise TypeError(
            "live_smc needs an SMC algorithm whose state has particles (such as "
            f"blackjax.adaptive_tempered_smc), got a {type(inner).__name__} state")
    return particles


def _check_smc(algorithm: Any, transform: Any) -> None:
    if not callable(algorithm) or not callable(getattr(algorithm, "init", None)):
        raise TypeError(
            "live_smc needs a BlackJAX SMC algorithm such as blackjax.adaptive_tempered_smc "
            f"(called with logprior_fn, loglikelihood_fn, ...), got "
            f"{type(algorithm).__name__}: {algorithm!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of the position, got {transform!r}")


def live_smc(algorithm: Any, draw: Callable[[BestFit], Any], *,
             transform: Callable[[Any], Any] | None = None,
             **view_options: Any) -> LiveSMC:
    """Wrap a BlackJAX SMC algorithm so that ``draw(best)`` shows its best particle live.

    ``best.parameters`` is the particle (or ``transform(particle)``, run on the
    device only when a report fires), ``best.log_likelihood`` its log
    posterior (``logprior_fn + loglikelihood_fn``), ``best.step`` the SMC step
    whose population held it (0: the initial one, 1: after the first step...).
    ``view_options`` go to :class:`~autofit_jaxviz.live.LiveView`.
    """
    _check_smc(algorithm, transform)
    name = getattr(algorithm, "__name__", None) or getattr(
        getattr(algorithm, "differentiable", None), "__module__", None) or "smc"
    view_options.setdefault("name", f"live[{str(name).rsplit('.', 1)[-1]}]")
    return LiveSMC(algorithm, LiveView(draw, **view_options), transform=transform)
