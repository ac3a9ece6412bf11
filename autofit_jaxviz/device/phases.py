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

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.tracker import BestFitTracker, TrackerState, _positive_int
from autofit_jaxviz.host.sink import HostSink
from autofit_jaxviz.payload import BestFit

if TYPE_CHECKING:
    from autofit_jaxviz.live import LiveView


class PhasedTracker:
    """Two trackers over one carried state: warm-up reports thinned by ``every``,
    sampling reports on every improvement (rare once the chain has converged)."""

    def __init__(self, view: LiveView, *, every: int = 1) -> None:
        every = _positive_int("every", every)
        self.view = view
        # check_every: vmapped chains count steps together, so their thinned
        # reports fall on the same steps and reduce to one callback
        self.warmup = BestFitTracker(HostSink(self._warmup_best, name=view.name),
                                     check_every=every)
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
        tracker = self.warmup._maybe_report(tracker, step, transform=transform, when=~sampling)
        return self.sampling._maybe_report(tracker, step, transform=transform, when=sampling)


def _restart_where(restart: Any, tracker: TrackerState) -> TrackerState:
    """Forget the best (the warm-up's) where ``restart``: sampling begins."""
    jnp = load_jax()[1]
    neg = jnp.asarray(-jnp.inf, tracker.best_log_likelihood.dtype)
    return tracker._replace(
        best_log_likelihood=jnp.where(restart, neg, tracker.best_log_likelihood),
        reported_log_likelihood=jnp.where(restart, neg, tracker.reported_log_likelihood),
    )
