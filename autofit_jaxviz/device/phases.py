"""Warm-up, then sampling: which best a sampler's live picture shows.

During warm-up the picture shows the best state so far. From the first
sampling step it follows the best *sample* (the tracker forgets the warm-up's
best there), so the last picture is the highest-density sample the run
returns, not a warm-up point the user never sees in the samples. Warm-up bests
go through a sink of their own (whose best is the warm-up's) and stop reaching
the worker once a sampling best has been handed on, so a slow chain still in
warm-up cannot replace a finished chain's best sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from autofit_jaxviz.device.batching import emitter, host_callback, pack_payload
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.packing import HEADER, ParamSpec, best_row
from autofit_jaxviz.device.tracker import (
    BestFitTracker,
    TrackerState,
    _positive_int,
    _transformed,
)
from autofit_jaxviz.host.sink import HostSink
from autofit_jaxviz.payload import BestFit

if TYPE_CHECKING:
    from autofit_jaxviz.live import BestFitView


class PhasedTracker:
    """One carried tracker state, two sinks: warm-up reports thinned to the steps
    where ``(step + 1) % every == 0`` (the same steps in every vmapped chain, so
    they reduce to one callback), sampling reports on every improvement (rare
    once the chain has converged). One ``lax.cond`` per step for both phases:
    the phase travels as one flag in the packed payload and the host routes it
    to its sink, so the transform and the callback are compiled once."""

    def __init__(self, view: BestFitView, *, every: int = 1) -> None:
        self.every = _positive_int("every", every)
        self.view = view
        self.warmup = BestFitTracker(HostSink(self._warmup_best, name=view.name))
        self.sampling = BestFitTracker(view.sink)

    def _warmup_best(self, best: BestFit) -> None:
        if self.view.sink.best is None:
            self.view.worker.submit(best)

    @property
    def callbacks(self) -> int:
        """Host callbacks received so far, both phases: what a storm would show."""
        return self.warmup.sink.stats().received + self.sampling.sink.stats().received

    def init(self, parameters: Any, score: Any) -> TrackerState:
        return self.warmup.init(parameters, score)

    def follow(
        self,
        tracker: TrackerState,
        parameters: Any,
        score: Any,
        *,
        sampling: Any,
        restart: Any = False,
        transform: Callable[[Any], Any] | None = None,
    ) -> TrackerState:
        """Fold one state in and report it if due. ``sampling`` and ``restart``
        (the first sampling step) are traced booleans; ``transform`` maps the
        best parameters to what ``draw`` gets, only when a report fires."""
        jnp = load_jax()[1]
        sampling = jnp.asarray(sampling)
        tracker = _restart_where(jnp.asarray(restart), tracker)
        tracker = self.warmup.track(tracker, parameters, score)
        step = tracker.step - 1
        improved = tracker.best_log_likelihood > tracker.reported_log_likelihood
        pred = improved & (sampling | ((step + 1) % self.every == 0))
        spec, prepare = _transformed(tracker.spec, transform)
        best = tracker.best_parameters
        flagged = jnp.concatenate([sampling.astype(best.dtype)[None], best])

        def prepare_flagged(flat: Any) -> Any:
            out = flat[1:] if prepare is None else prepare(flat[1:])
            return jnp.concatenate([flat[:1].astype(out.dtype), out])

        emitter(self._router(spec), prepare_flagged)(
            pred, tracker.best_log_likelihood, tracker.best_step, flagged,
            tracker.reported_log_likelihood)
        return tracker._replace(
            reported_log_likelihood=jnp.where(
                pred, tracker.best_log_likelihood, tracker.reported_log_likelihood),
            last_report_step=jnp.where(pred, step, tracker.last_report_step),
        )

    def track(self, tracker: TrackerState, parameters: Any, score: Any, *,
              restart: Any = False) -> TrackerState:
        """Fold one state in without reporting: no callback in the loop (the host
        reads the best later, from :meth:`pack`)."""
        jnp = load_jax()[1]
        return self.warmup.track(_restart_where(jnp.asarray(restart), tracker), parameters, score)

    def pack(self, tracker: TrackerState, sampling: Any,
             transform: Callable[[Any], Any] | None = None) -> Any:
        """On the device: the best (of all chains, for a batch of trackers) as one
        flagged payload for :meth:`send`."""
        jnp = load_jax()[1]
        prepare = _transformed(tracker.spec, transform)[1]
        ll, step, flat = tracker.best_log_likelihood, tracker.best_step, tracker.best_parameters
        if ll.ndim:  # vmapped chains (or a history of states): the best of all
            ll, flat, onehot = best_row(ll.reshape(-1), flat.reshape(-1, flat.shape[-1]))
            step = step.reshape(-1)[jnp.argmax(onehot)]
        payload = pack_payload(ll, step, flat if prepare is None else prepare(flat))
        flag = jnp.reshape(jnp.asarray(sampling, payload.dtype), (-1,))[:1]
        return jnp.concatenate([payload[:HEADER], flag, payload[HEADER:]])

    @staticmethod
    def layout(tracker: TrackerState, transform: Callable[[Any], Any] | None = None) -> ParamSpec:
        """The layout :meth:`pack`'s parameters unpack with (``transform``'s output)."""
        return _transformed(tracker.spec, transform)[0]

    def send(self, packed: Any, spec: ParamSpec) -> None:
        """On the host: hand a :meth:`pack` payload to its phase's sink."""
        self._router(spec)(packed)

    def _router(self, spec: ParamSpec) -> Callable[[Any], None]:
        """The host end: strip the phase flag, hand the payload to its phase's sink."""
        to_warmup = host_callback(self.warmup.sink, spec, device_step=True, final=False)
        to_sampling = host_callback(self.sampling.sink, spec, device_step=True, final=False)

        def route(packed: Any) -> None:
            flat = np.asarray(packed).reshape(-1)
            payload = np.concatenate([flat[:HEADER], flat[HEADER + 1:]])
            (to_sampling if flat[HEADER] > 0.5 else to_warmup)(payload)

        return route


def _restart_where(restart: Any, tracker: TrackerState) -> TrackerState:
    """Forget the best (the warm-up's) where ``restart``: sampling begins."""
    jnp = load_jax()[1]
    neg = jnp.asarray(-jnp.inf, tracker.best_log_likelihood.dtype)
    return tracker._replace(
        best_log_likelihood=jnp.where(restart, neg, tracker.best_log_likelihood),
        reported_log_likelihood=jnp.where(restart, neg, tracker.reported_log_likelihood),
    )
