"""optax: a live picture of the lowest loss so far, by wrapping the optimiser.

::

    optimizer = live_optimizer(optax.adam(1e-2), draw)     # the one line
    state = optimizer.init(params)
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state
    ...                                                    # any jitted loop
    optimizer.close(state)                                 # the final best, full dpi

The wrapper's state is the optimiser's own state with a
:class:`~autofit_jaxviz.BestFitTracker` beside it, so it works in any loop the
user writes (``jit``, ``lax.fori_loop``, ``while_loop``, ``scan``): each
``update`` folds ``(params, -value)`` into the best on the device and calls
the host only when the loss went down. ``value`` is the loss at ``params``
(what ``optax.contrib.reduce_on_plateau`` also reads; it is passed on to the
optimiser). Vmapping the step over several starts calls back once per step at
most, with the best start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.tracker import BestFitTracker, TrackerState, _positive_int
from autofit_jaxviz.live import LiveView
from autofit_jaxviz.payload import BestFit

try:
    import optax
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autofit_jaxviz.optax needs optax: pip install 'autofit_jaxviz[optax]'"
    ) from error


class LiveOptState(NamedTuple):
    """The optimiser's state and the tracker of the lowest loss."""

    inner: Any
    tracker: TrackerState


class LiveOptimizer(optax.GradientTransformationExtraArgs):
    """An optax transformation that runs an optimiser and reports its best params.

    Build it with :func:`live_optimizer`; ``view`` is the host half.
    """

    view: LiveView
    tracker: BestFitTracker

    def close(self, state: LiveOptState | None = None, timeout: float | None = None) -> bool:
        """After the loop: report the best in ``state`` (also one that ``every``
        held back; with vmapped starts, the best start's), wait for the
        callbacks and draw it at full resolution. True if done within ``timeout``."""
        if state is not None:
            if not isinstance(state, LiveOptState):
                raise TypeError(
                    f"close needs this optimiser's state (a LiveOptState), got {type(state)}")
            jax, jnp, _ = load_jax()
            tracker = state.tracker
            if jnp.ndim(tracker.best_log_likelihood):  # vmapped starts
                best = int(jnp.argmax(tracker.best_log_likelihood))
                tracker = jax.tree.map(lambda leaf: leaf[best], tracker)
            if bool(jnp.isfinite(tracker.best_log_likelihood)):
                self.tracker.report_final(tracker)  # concrete: straight to the sink
        return self.view.close(timeout, wait_for=state)


def live_optimizer(optimizer: optax.GradientTransformation, draw: Callable[[BestFit], Any], *,
                   every: int = 25, **view_options: Any) -> LiveOptimizer:
    """Wrap an optax optimiser so that ``draw(best)`` shows the lowest-loss params live.

    ``best.parameters`` is the params pytree (NumPy), ``best.log_likelihood``
    minus the loss, ``best.step`` the ``update`` count that found it. An
    optimiser's loss falls at almost every update, so reports are thinned to at
    most one per ``every`` updates (default 25); :meth:`LiveOptimizer.close`
    reports the final best whatever ``every`` held back. ``view_options`` go to
    :class:`~autofit_jaxviz.live.LiveView`.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"live_optimizer needs an optax GradientTransformation (optax.adam(...), "
                        f"optax.chain(...)), got {type(optimizer).__name__}: {optimizer!r}")
    every = _positive_int("every", every)
    view_options.setdefault("name", "live[optax]")
    view = LiveView(draw, **view_options)
    # check_every, not every: the update count is the same in every vmapped start,
    # so their reports fall on the same steps and reduce to one callback
    tracker = BestFitTracker(view.sink, check_every=every)
    inner = optax.with_extra_args_support(optimizer)

    def init(params: Any) -> LiveOptState:
        return LiveOptState(inner.init(params), tracker.init(params))

    def update(updates: Any, state: LiveOptState, params: Any = None, *, value: Any = None,
               **extra: Any) -> tuple[Any, LiveOptState]:
        if params is None or value is None:
            raise TypeError(
                "live_optimizer: update needs params and value=loss (the loss at params), "
                f"got params={'None' if params is None else 'given'}, "
                f"value={'None' if value is None else 'given'}")
        if not isinstance(state, LiveOptState):
            raise TypeError(
                f"live_optimizer: state must come from this optimiser's init, got {type(state)}")
        out, inner_state = inner.update(updates, state.inner, params, value=value, **extra)
        score = -load_jax()[1].asarray(value)
        return out, LiveOptState(inner_state, tracker.update(state.tracker, params, score))

    live = LiveOptimizer(init, update)
    live.view, live.tracker = view, tracker
    return live
