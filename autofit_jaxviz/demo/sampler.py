"""BlackJAX NUTS, warm-up included, as one jitted ``lax.scan`` with the tracker in its carry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

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
    pass


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
    tracker: Any | None,
    tick: Callable[[Any], None] | None,
) -> Callable[..., Any]:
    """The whole run as one function for ``jax.jit``: one ``lax.scan`` over warm-up + sampling.

    Warm-up is Stan's windowed adaptation (dual averaging of the step size,
    diagonal mass matrix from expanding windows) built from BlackJAX's
    adaptation pieces inside our own scan, because ``blackjax.window_adaptation``
    runs its own scan, which has no room for the tracker: the warm-up is where
    the fit improves most, so that is where the picture must update.
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.adaptation.window_adaptation import build_schedule
    from jax import lax

    total = warmup + steps
    # float32 by default; float64 when the user runs JAX with x64 on, because
    # BlackJAX then builds its adaptation state in float64 and lax.cond needs one dtype
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

    # (stage, is the end of a slow window) per warm-up step; a dummy row when there is none
    schedule = np.asarray(build_schedule(warmup), np.int32) if warmup else np.zeros((1, 2))
    schedule = schedule.astype(np.int32).reshape(-1, 2)
    kernel = blackjax.nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(0.8)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=True)
    tick_every = max(1, total // PROGRESS_TICKS)

    def adapt(i: Any, stage: Any, window_end: Any, position: Any, acceptance: Any,
              da: Any, mm: Any) -> tuple[Any, Any, Any, Any]:
        da = da_update(da, acceptance)
        mm = lax.cond(stage == 1, lambda m: mm_update(m, position), lambda m: m, mm)
        # end of a slow window: new mass matrix, step size restarts from its average
        da, mm = lax.cond(
            window_end == 1,
            lambda d, m: (da_init(da_final(d)), mm_final(m)),
            lambda d, m: (d, m),
            da, mm,
        )
        step_size = jnp.where(i == warmup - 1, da_final(da), jnp.exp(da.log_step_size))
        return da, mm, step_size.astype(dtype), mm.inverse_mass_matrix.astype(dtype)

    def run(key: Any, start: Any) -> dict[str, Any]:
        state = blackjax.nuts.init(start, log_posterior)
        mm = mm_init(start.shape[0])
        start_ll = state.logdensity - log_prior(start)
        if tracker is not None:
            best = tracker.init(start)
            best = tracker.update(best, start, start_ll)  # step 0: the starting point
        else:
            best = (start_ll, start)
        initial_step_size = jnp.asarray(0.01, dtype)
        carry = (state, da_init(initial_step_size), mm, initial_step_size,
                 mm.inverse_mass_matrix.astype(dtype), best, jnp.int32(0), jnp.int32(0))

        table = jnp.asarray(schedule)

        def one_step(carry: Any, i: Any) -> tuple[Any, None]:
            state, da, mm, step_size, imm, best, grads, divergent = carry
            stage, window_end = table[jnp.minimum(i, table.shape[0] - 1)]
            step_key = jax.random.fold_in(key, i)
            state, info = kernel(step_key, state, log_posterior, step_size, imm)
            da, mm, step_size, imm = lax.cond(
                i < warmup,
                lambda: adapt(i, stage, window_end, state.position, info.acceptance_rate, da, mm),
                lambda: (da, mm, step_size, imm),
            )
            ll = state.logdensity - log_prior(state.position)
            if tracker is not None:
                best = tracker.update(best, state.position, ll)
            else:
                better = ll > best[0]
                best = (jnp.where(better, ll, best[0]), jnp.where(better, state.position, best[1]))
            if tick is not None:
                done = i + 1
                lax.cond(done % tick_every == 0,
                         lambda: jax.debug.callback(tick, done), lambda: None)
            grads = grads + info.num_integration_steps
            divergent = divergent + info.is_divergent.astype(jnp.int32)
            return (state, da, mm, step_size, imm, best, grads, divergent), None

        carry, _ = lax.scan(one_step, carry, jnp.arange(total))
        best, grads, divergent = carry[5:]
        return {"best": best, "gradient_evaluations": grads, "divergences": divergent}

    return run
