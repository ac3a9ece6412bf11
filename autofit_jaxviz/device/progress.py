"""Progress ticks from inside a jitted loop someone else owns: ``progress(steps_done)`` on the host.

A sampler that runs for hours inside one ``lax.scan`` says nothing until it
returns; the live picture shows the best fit, not how far the run has got.
:func:`ticker` adds one ``lax.cond`` on the step counter the tracker already
carries and calls the host every ``every`` steps. Like the best-fit emitter it
is a ``custom_vmap``: vmapped chains (in lock-step, one counter each) tick
once per step, not once per chain, and inside ``shard_map`` only the first
device ticks. The host end never raises into XLA: a failing ``progress`` is
logged (rate-limited) and the sampler goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from autofit_jaxviz.device.batching import reduce_axes
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.failure_log import FailureLog

logger = logging.getLogger(__name__)


class ProgressCall:
    """The host end: ``progress(int(steps))``, counted, its failures logged, never raised."""

    def __init__(self, progress: Callable[[int], Any], name: str) -> None:
        if not callable(progress):
            raise TypeError(f"progress must be a function of the steps done, got {progress!r}")
        self.progress = progress
        self.calls = 0
        self.failed = 0
        self._lock = threading.Lock()  # several devices' callback threads may count at once
        self._failures = FailureLog(logger, name, "progress callback")

    def __call__(self, steps: Any) -> None:
        with self._lock:
            self.calls += 1
        try:
            self.progress(int(np.asarray(steps)))
        except Exception as error:  # never into XLA: that would abort the sampler
            with self._lock:
                self.failed += 1
            self._failures.record(error)


def ticker(host: Callable[[Any], None], every: int) -> Callable[[Any], Any]:
    """Build ``tick(steps_done)``: ``host(steps_done)`` when it is a multiple of ``every``.

    Once per step under ``vmap`` (the first row's counter stands for all:
    chains stepped together count alike) and once per mesh under ``shard_map``
    (under ``pmap``, whose devices run apart, once per device).
    """
    jax, jnp, lax = load_jax()

    @jax.custom_batching.custom_vmap
    def tick(steps: Any) -> Any:
        due = steps % every == 0
        manual, _ = reduce_axes(steps)
        if manual:
            due = due & (lax.axis_index(manual) == 0)
        lax.cond(due, lambda s: jax.debug.callback(host, s), lambda s: None, steps)
        return due

    @tick.def_vmap
    def _rule(axis_size: int, in_batched: list[bool], steps: Any) -> tuple[Any, bool]:
        first = steps[0] if in_batched[0] else steps
        return jnp.broadcast_to(tick(first), (axis_size,)), True

    return tick
