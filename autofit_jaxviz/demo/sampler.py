"""BlackJAX NUTS through its stock warm-up and loop, one jitted run, drawn by ``LiveAlgorithm``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autofit_jaxviz.demo.model import (
    PRIOR_MEAN,
    PRIOR_SIGMA,
    Observation,
    log_norm,
    pixel_grid,
    sersic_image,
)
from autofit_jaxviz.demo.progress import PROGRESS_TICKS

if TYPE_CHECKING:
    from autofit_jaxviz.live import BestFitView


class MissingDependencyError(ImportError):
    """JAX or BlackJAX is not installed; the message says what to install."""


_REQUIRED = (
    ("jax", "jax", "the sampler runs as jitted JAX code"),
    ("blackjax", "blackjax", "the sampler is BlackJAX's NUTS"),
)


def require_sampler() -> None:
    """Import JAX and BlackJAX, or say which package to install."""
    for module, package, why in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingDependencyError(
                f"the demo needs the '{package}' package ({why}), but importing {module} "
                f"failed ({error}). Install it with:  pip install {package}   "
                "(or everything the demo needs:  pip install 'autofit_jaxviz[demo]')"
            ) from error


def float_dtype() -> Any:
    """JAX's default float: float32, or float64 when x64 is enabled."""
    import jax.numpy as jnp

    return jnp.asarray(0.0).dtype


def build_sampler(
    observation: Observation,
    *,
    warmup: int,
    steps: int,
    view: BestFitView | None = None,
    every: int = 1,
    progress: Callable[[int], Any] | None = None,
) -> Callable[..., Any]:
    """The whole run for ``jax.jit``: BlackJAX's stock ``window_adaptation``, then
    ``run_inference_algorithm``, with ``blackjax.nuts`` as it comes.

    With ``view`` the algorithm is :class:`~autofit_jaxviz.blackjax.LiveAlgorithm`
    around ``blackjax.nuts``: the best *likelihood* is drawn (the score is the
    state's log posterior minus the log prior), warm-up reports thinned by
    ``every``, and ``progress(steps_done)`` ticks about :data:`PROGRESS_TICKS`
    times a run; the best returned is the tracker's, what the last picture
    shows. Without it this is the baseline: the same chain, nothing watching,
    its best sample found in the run's own trace.
    """
    if view is None and (progress is not None or every != 1):
        raise ValueError(f"every={every!r} and progress={progress!r} need a view to report to")
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.util import run_inference_algorithm

    from autofit_jaxviz.blackjax import LiveAlgorithm

    # float32 by default; float64 when the user runs JAX with x64 on (as importing
    # autofit does): BlackJAX's conds need the state and its adaptation in one dtype
    dtype = float_dtype()
    x, y = (jnp.asarray(a, dtype)
            for a in pixel_grid(observation.data.shape, observation.pixel_scale))
    data = jnp.asarray(observation.data, dtype)
    inv_sigma = 1.0 / observation.noise_sigma
    norm = log_norm(observation)
    prior_mean, prior_sigma = jnp.asarray(PRIOR_MEAN, dtype), jnp.asarray(PRIOR_SIGMA, dtype)

    def log_like(p: Any) -> Any:
        chi = (data - sersic_image(p, x, y, xp=jnp)) * inv_sigma
        return -0.5 * jnp.sum(chi * chi) + norm

    def log_prior(p: Any) -> Any:
        z = (p - prior_mean) / prior_sigma
        return -0.5 * jnp.sum(z * z)

    def log_posterior(p: Any) -> Any:
        return log_like(p) + log_prior(p)

    def likelihood(state: Any) -> Any:
        # the live picture's score and the trace's: one formula, so they pick the same sample
        return state.logdensity - log_prior(state.position)

    def record(state: Any, info: Any) -> tuple[Any, ...]:
        # what the run returns per sampling step (no full states kept), in both
        # arms: the live run reads its best from the tracker, but keeps the same
        # trace so that --no-viz is the same work without the hook
        return likelihood(state), state.position, info.num_integration_steps, info.is_divergent

    nuts: Any = blackjax.nuts
    if view is not None:
        nuts = LiveAlgorithm(
            blackjax.nuts, view, every=every, score=likelihood, progress=progress,
            progress_every=None if progress is None else max(1, (warmup + steps) // PROGRESS_TICKS))


    def run(key: Any, start: Any) -> dict[str, Any]:
        warmup_key, sampling_key = jax.random.split(key)
        if warmup:
            (state, parameters), adapted = blackjax.window_adaptation(
                nuts, log_posterior).run(warmup_key, start, num_steps=warmup)
            grads = jnp.sum(adapted.info.num_integration_steps)
            divergent = jnp.sum(adapted.info.is_divergent.astype(jnp.int32))
        else:
            state = nuts.init(start, log_posterior)
            parameters = {"step_size": jnp.asarray(0.01, dtype),
                          "inverse_mass_matrix": jnp.ones(start.shape[0], dtype)}
            grads = divergent = jnp.int32(0)
        state, (lls, positions, integration, divergences) = run_inference_algorithm(
            sampling_key, nuts(log_posterior, **parameters), steps, initial_state=state,
            transform=record)
        if view is None:  # the baseline: the best sample of the trace
            index = jnp.argmax(lls)
            best = (lls[index], positions[index], warmup + index)
        else:  # what the last picture shows: the best sample the tracker kept
            tracker = state.tracker
            best = (tracker.best_log_likelihood, tracker.best_parameters, tracker.best_step)
        return {
            "best_log_likelihood": best[0],
            "best_parameters": best[1],
            # 0-based kernel steps from the first warm-up step (the start is step 0 too)
            "best_step": best[2],
            "gradient_evaluations": grads + jnp.sum(integration),
            "divergences": divergent + jnp.sum(divergences.astype(jnp.int32)),
            "state": state,
        }

    return run
