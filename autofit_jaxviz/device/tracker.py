"""The tracker: the best fit in the loop carry, the host called only when it improved.

For code that owns its loop. A small pytree state carried through
``scan``/``while_loop``/``fori_loop`` keeps the best fit on the device; the
host is called (one ``lax.cond`` on a scalar predicate) only when the best
improved since it was last reported and at most once every ``every`` steps.
``report_final`` pushes the last best after the loop, so it is never lost. The
cost is the callbacks that fire (a few per improvement early on), not the
per-step bookkeeping: measured on CPU, 1.15x on a ~5 us step with
``every=1``, ~1.0x on a 1,000-walker step (``benchmarks/bench_callback.py``).
For the hottest loops, ``track`` in an inner scan and ``maybe_report`` in the
outer one keep the cond out of the inner loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from autofit_jaxviz.device.batching import (
    emitter,
    global_best,
    host_callback,
    is_tracer,
    reduce_axes,
)
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.packing import (
    STEP_SPLIT,
    ParamSpec,
    best_row,
    check_log_likelihood,
    clean_log_likelihood,
    flat_dtype,
    flatten,
    spec_of,
)
from autofit_jaxviz.host.sink import HostSink


class TrackerState:
    """The carry of :class:`BestFitTracker`: a pytree of a few scalars and one vector.

    ``best_parameters`` is flat; :meth:`BestFitTracker.best_parameters` rebuilds
    the pytree. The parameter layout is static (pytree aux data), so ``scan``
    and ``while_loop`` check it like any other structure.
    """

    __slots__ = (
        "best_log_likelihood",
        "best_parameters",
        "best_step",
        "step",
        "reported_log_likelihood",
        "last_report_step",
        "spec",
    )
    _FIELDS = __slots__[:-1]

    def __init__(
        self,
        best_log_likelihood: Any,
        best_parameters: Any,
        best_step: Any,
        step: Any,
        reported_log_likelihood: Any,
        last_report_step: Any,
        spec: ParamSpec,
    ) -> None:
        self.best_log_likelihood = best_log_likelihood
        self.best_parameters = best_parameters
        self.best_step = best_step
        self.step = step
        self.reported_log_likelihood = reported_log_likelihood
        self.last_report_step = last_report_step
        self.spec = spec

    def _replace(self, **changes: Any) -> TrackerState:
        values = {f: getattr(self, f) for f in self.__slots__}
        values.update(changes)
        return TrackerState(**values)

    def _flatten(self) -> tuple[tuple[Any, ...], ParamSpec]:
        return tuple(getattr(self, f) for f in self._FIELDS), self.spec

    def _flatten_with_keys(self) -> tuple[tuple[tuple[Any, Any], ...], ParamSpec]:
        jax, _, _ = load_jax()
        key = jax.tree_util.GetAttrKey
        return tuple((key(f), getattr(self, f)) for f in self._FIELDS), self.spec

    @classmethod
    def _unflatten(cls, spec: ParamSpec, children: Any) -> TrackerState:
        return cls(*children, spec)

    def __repr__(self) -> str:
        return (
            f"TrackerState(best_log_likelihood={self.best_log_likelihood!r}, "
            f"best_step={self.best_step!r}, step={self.step!r}, "
            f"parameters=[{self.spec.describe()}])"
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class BestFitTracker:
    """Keep the best fit in the loop carry; call the host only when it improved.

    Use inside any jitted loop you own::

        tracker = BestFitTracker(worker, every=100)
        state = tracker.init(example_parameters)
        def step(carry, key):
            ..., params, ll = sampler_step(...)
            return (..., tracker.update(carry_state, params, ll)), None
        ... = lax.scan(step, ...)
        tracker.report_final(state)

    Parameters
    ----------
    target
        A :class:`HostSink`, or anything a ``HostSink`` accepts (an object with
        ``submit`` or a callable), which is wrapped in one.
    every
        Call the host at most once per this many updates. An improvement made
        on a step that may not report is reported at the next step that may.
    check_every
        Let only every ``check_every``-th update report (the best is still
        tracked on every update). This thins out callbacks; the ``lax.cond``
        itself is still in every step. To take it out of the hot loop entirely
        (on a GPU a cond predicate can cost a device-to-host sync), call
        :meth:`track` in an inner ``scan`` and :meth:`maybe_report` once per
        outer iteration.
    min_seconds
        Host-side rate limit, passed to the ``HostSink`` (ignored if ``target``
        already is one).

    ``BestFit.step`` is the 0-based index of the update that found the fit.
    Do not vmap the tracker over walkers: pass the batch (``(walkers, n)``
    parameters, ``(walkers,)`` log-likelihoods). Vmapping whole chains (one
    state per chain) works and still calls back at most once per step.
    """

    def __init__(
        self,
        target: Any,
        *,
        every: int = 1,
        check_every: int = 1,
        min_seconds: float = 0.0,
    ) -> None:
        self.every = _positive_int("every", every)
        self.check_every = _positive_int("check_every", check_every)
        self.sink = (
            target if isinstance(target, HostSink) else HostSink(target, min_seconds=min_seconds)
        )

    def init(self, parameters: Any, log_likelihood: Any = None) -> TrackerState:
        """A fresh state for parameters shaped like ``parameters``.

        ``parameters`` is one walker's pytree (arrays or ``jax.ShapeDtypeStruct``).
        With ``log_likelihood`` (scalar, or ``(walkers,)`` for a batch) the state
        starts from that fit, reported by the first ``update``.
        """
        _, jnp, _ = load_jax()
        _register_state()
        if log_likelihood is None:
            spec, _ = spec_of(parameters, None, "BestFitTracker.init")
            ll_dtype = flat_dtype(spec)
            flat = jnp.zeros((spec.size,), flat_dtype(spec))
            best = jnp.asarray(-jnp.inf, ll_dtype)
        else:
            ll = check_log_likelihood(log_likelihood, "BestFitTracker.init")
            walkers = ll.shape[0] if ll.ndim == 1 else None
            spec, leaves = spec_of(parameters, walkers, "BestFitTracker.init")
            flat = flatten(spec, leaves, walkers)
            if walkers is None:
                best = clean_log_likelihood(jnp.asarray(ll))
            else:
                best, flat, _ = best_row(jnp.asarray(ll), flat)
        neg = jnp.asarray(-jnp.inf, best.dtype)
        zero = jnp.zeros((), jnp.int32)
        return TrackerState(
            best_log_likelihood=best,
            best_parameters=flat,
            best_step=zero,
            step=zero,
            reported_log_likelihood=neg,
            last_report_step=jnp.asarray(-self.every, jnp.int32),
            spec=spec,
        )

    def update(
        self,
        state: TrackerState,
        parameters: Any,
        log_likelihood: Any,
        *,
        transform: Callable[[Any], Any] | None = None,
    ) -> TrackerState:
        """Fold one step's walker (or batch) into the best and report it if due.

        ``transform`` (a traceable function of the best parameters' pytree) is
        applied to what is sent, only when a report fires: the host gets its
        output (e.g. a sampler's constrained parameters) and the state keeps
        tracking the parameters as given.
        """
        state = self.track(state, parameters, log_likelihood)
        return self._maybe_report(state, state.step - 1, transform=transform)

    def track(self, state: TrackerState, parameters: Any, log_likelihood: Any) -> TrackerState:
        """Fold a step into the best without any host contact (no ``lax.cond``).

        Combine with :meth:`maybe_report` to report from an outer loop only, so an
        inner loop carries no callback at all.
        """
        _, jnp, _ = load_jax()
        if not isinstance(state, TrackerState):
            raise TypeError(
                f"state must be the TrackerState from BestFitTracker.init, got {type(state)}"
            )
        ll = check_log_likelihood(log_likelihood, "BestFitTracker.update")
        walkers = ll.shape[0] if ll.ndim == 1 else None
        spec, leaves = spec_of(parameters, walkers, "BestFitTracker.update")
        if spec != state.spec:
            raise ValueError(
                "BestFitTracker.update: parameters do not match the layout given to init; "
                f"expected one walker as [{state.spec.describe()}], got [{spec.describe()}]"
                + ("" if walkers is None else f" (after removing the walkers axis {walkers})")
            )
        flat = flatten(spec, leaves, walkers)
        if walkers is None:
            cand = clean_log_likelihood(ll)
        else:
            cand, flat, _ = best_row(ll, flat)
        _, axes = reduce_axes(cand, flat)
        if axes:  # inside shard_map: keep one replicated best for the whole mesh
            _, cand, _, flat = global_best(cand > -jnp.inf, cand, state.step, flat, axes)
        cand = cand.astype(state.best_log_likelihood.dtype)
        better = cand > state.best_log_likelihood
        return state._replace(
            best_log_likelihood=jnp.where(better, cand, state.best_log_likelihood),
            best_parameters=jnp.where(
                better, flat.astype(state.best_parameters.dtype), state.best_parameters
            ),
            best_step=jnp.where(better, state.step, state.best_step),
            step=state.step + 1,
        )

    def maybe_report(
        self, state: TrackerState, *, transform: Callable[[Any], Any] | None = None
    ) -> TrackerState:
        """Report the best if it improved since the last report and the cadence allows."""
        return self._maybe_report(state, state.step, transform=transform)

    def _maybe_report(
        self,
        state: TrackerState,
        step: Any,
        *,
        transform: Callable[[Any], Any] | None = None,
    ) -> TrackerState:
        _, jnp, _ = load_jax()
        pred = (state.best_log_likelihood > state.reported_log_likelihood) & (
            step - state.last_report_step >= self.every
        )
        if self.check_every > 1:
            pred = pred & ((step + 1) % self.check_every == 0)
        spec, prepare = _transformed(state.spec, transform)
        emit = emitter(host_callback(self.sink, spec, device_step=True, final=False), prepare)
        emit(pred, state.best_log_likelihood, state.best_step, state.best_parameters,
             state.reported_log_likelihood)
        return state._replace(
            reported_log_likelihood=jnp.where(
                pred, state.best_log_likelihood, state.reported_log_likelihood
            ),
            last_report_step=jnp.where(pred, step, state.last_report_step),
        )

    def report_final(
        self, state: TrackerState, *, transform: Callable[[Any], Any] | None = None
    ) -> TrackerState:
        """Push the best after the loop, bypassing ``every``, ``check_every`` and ``min_seconds``.

        Inside ``jit`` it is one more callback. Outside (a concrete state) it calls
        the sink directly, so the final best has been handed on when it returns
        (a ``transform`` is then run once, jitted, on this thread, before the
        sink is called).
        """
        jax, jnp, _ = load_jax()
        spec, prepare = _transformed(state.spec, transform)
        host = host_callback(self.sink, spec, device_step=True, final=True)
        if not any(is_tracer(x) for x in (state.best_log_likelihood, state.best_parameters)):
            ll = np.asarray(state.best_log_likelihood)
            if ll.ndim:
                raise ValueError(
                    "report_final: got a batch of tracker states (best_log_likelihood shape "
                    f"{ll.shape}); call it on one state, or inside the vmapped function"
                )
            step = int(np.asarray(state.best_step))
            flat = np.asarray(
                state.best_parameters if prepare is None else jax.jit(prepare)(
                    state.best_parameters))
            dtype = np.result_type(flat.dtype, ll.dtype)
            header = np.array([ll, step // STEP_SPLIT, step % STEP_SPLIT], dtype)
            host(np.concatenate([header, flat.astype(dtype)]))
        else:
            pred = state.best_log_likelihood > -jnp.inf
            emitter(host, prepare)(
                pred, state.best_log_likelihood, state.best_step, state.best_parameters
            )
        return state._replace(
            reported_log_likelihood=state.best_log_likelihood,
            last_report_step=state.step,
        )

    def best_parameters(self, state: TrackerState) -> Any:
        """The best parameters as the pytree given to ``init`` (on the device)."""
        return state.spec.unflatten_jax(state.best_parameters)

    def __repr__(self) -> str:
        return (
            f"BestFitTracker(every={self.every}, check_every={self.check_every}, "
            f"sink={self.sink!r})"
        )


def _transformed(
    spec: ParamSpec, transform: Callable[[Any], Any] | None
) -> tuple[ParamSpec, Callable[[Any], Any] | None]:
    """The layout the host receives and the device function that makes it from
    the tracked flat vector (``None``: the tracked parameters as they are)."""
    if transform is None:
        return spec, None
    jax, _, _ = load_jax()

    def prepare(flat: Any) -> Any:
        out_spec, leaves = spec_of(transform(spec.unflatten_jax(flat)), None, "transform")
        return flatten(out_spec, leaves, None)

    shape = jax.eval_shape(
        lambda flat: transform(spec.unflatten_jax(flat)),
        jax.ShapeDtypeStruct((spec.size,), flat_dtype(spec)),
    )
    out_spec, _ = spec_of(shape, None, "transform")
    return out_spec, prepare


@functools.cache
def _register_state() -> None:
    """Make :class:`TrackerState` a pytree, once, when the first tracker is built."""
    jax, _, _ = load_jax()
    jax.tree_util.register_pytree_with_keys(
        TrackerState,
        TrackerState._flatten_with_keys,
        TrackerState._unflatten,
        TrackerState._flatten,
    )
