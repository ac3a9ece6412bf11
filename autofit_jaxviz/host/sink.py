"""The host side of the in-jit hook: compare with the host best, hand improvements on.

The sink runs on XLA's callback thread while the device waits, so it does as
little as possible and never calls JAX: ``debug.callback`` hands it a CPU
``jax.Array``; ``np.asarray`` of it would be a zero-copy view of a buffer XLA
owns, so the sink takes one explicit ``np.array`` copy (a few dozen floats,
marked read-only) and builds NumPy leaves as views of it (``PyTreeDef.unflatten``
dispatches nothing). It takes ~3-5 us of the ~150-250 us a callback costs. Any
exception is caught and counted (raising into XLA would abort the sampler).
Non-finite log-likelihoods (NaN, +inf, -inf) are rejected: a single overflow
would otherwise freeze the best forever.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autofit_jaxviz.device.packing import HEADER, STEP_SPLIT
from autofit_jaxviz.failure_log import FailureLog
from autofit_jaxviz.payload import BestFit

if TYPE_CHECKING:
    from autofit_jaxviz.device.packing import ParamSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What a :class:`HostSink` has seen so far."""

    received: int  # callbacks that reached this process's sink
    delivered: int  # best fits handed to the target
    stale: int  # payloads that did not beat the host best (or were not finite)
    held: bool  # a better fit is waiting for ``min_seconds`` to pass
    failed: int  # exceptions caught (target or unpacking), never raised into XLA
    other_process: int  # callbacks ignored because this is not process 0


class HostSink:
    """The host side of the hook: keep the host best, hand improvements to ``target``.

    Parameters
    ----------
    target
        An object with ``submit(payload)`` (a ``QuickUpdateWorker``) or a plain
        callable taking one :class:`BestFit`. It runs on XLA's callback thread
        while the device waits for the callback to return, so it must be fast:
        hand rendering to a worker.
    min_seconds
        Hand on at most one best fit per this many seconds. A better fit that
        arrives sooner is held and handed on with the next callback after the
        interval, by :meth:`flush`, or by the tracker's ``report_final``. (The
        worker's own ``min_interval`` throttles rendering without holding back;
        this only saves ``submit`` calls.)
    name
        Used in log lines.

    The host best persists across runs of a jitted function, so a second fit
    only shows fits better than the first's; call :meth:`reset` between fits.
    """

    def __init__(self, target: Any, *, min_seconds: float = 0.0, name: str = "best-fit") -> None:
        submit = getattr(target, "submit", None)
        if callable(submit):
            self._submit: Callable[[BestFit], Any] = submit
        elif callable(target):
            self._submit = target
        else:
            raise TypeError(
                "target must have a submit(payload) method (e.g. QuickUpdateWorker) or be "
                f"callable with one BestFit, got {type(target).__name__}: {target!r}"
            )
        if (
            isinstance(min_seconds, bool)
            or not isinstance(min_seconds, int | float)
            or not min_seconds >= 0
            or math.isinf(min_seconds)
        ):
            raise ValueError(f"min_seconds must be a finite number >= 0, got {min_seconds!r}")
        self.target = target
        self.name = name
        self._min_seconds = float(min_seconds)
        self._lock = threading.Lock()
        self._reset_locked()
        self._received = 0
        self._delivered = 0
        self._stale = 0
        self._failed = 0
        self._other_process = 0
        self._failure_log = FailureLog(logger, name, "host callback")

    def _reset_locked(self) -> None:
        self._best_ll = -math.inf
        self._best: BestFit | None = None
        self._held: BestFit | None = None
        self._last_delivery = -math.inf
        self._report_calls = 0

    def reset(self) -> None:
        """Forget the host best (and any held fit), e.g. before a new fit."""
        with self._lock:
            self._reset_locked()

    @property
    def best(self) -> BestFit | None:
        """The best fit accepted so far (delivered or held), or None."""
        return self._best

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(
                received=self._received,
                delivered=self._delivered,
                stale=self._stale,
                held=self._held is not None,
                failed=self._failed,
                other_process=self._other_process,
            )

    def flush(self) -> bool:
        """Hand on a fit held back by ``min_seconds``; True if one was handed on.

        Callbacks run asynchronously: call ``jax.effects_barrier()`` first so
        every callback of a finished computation has arrived.
        """
        with self._lock:
            held, self._held = self._held, None
            if held is None:
                return False
            self._deliver_locked(held)
            return True

    # -- called by XLA ---------------------------------------------------------------

    def _on_device(
        self,
        spec: ParamSpec,
        device_step: bool,
        final: bool,
        process_index: int,
        packed: Any,
    ) -> None:
        """Receive one packed payload. Never raises: XLA would abort the computation."""
        try:
            if process_index != 0:
                with self._lock:
                    self._other_process += 1
                return
            flat = np.array(packed, copy=True).reshape(-1)  # one copy: XLA owns the buffer
            log_likelihood = float(flat[0])
            with self._lock:
                self._received += 1
                self._report_calls += 1
                if device_step:
                    step = int(flat[1]) * STEP_SPLIT + int(flat[2])
                else:
                    step = self._report_calls
                self._offer_locked(spec, flat, log_likelihood, step, final)
        except Exception as error:  # noqa: BLE001 - must not propagate into XLA
            self._failure(error)

    def _offer_locked(
        self, spec: ParamSpec, flat: np.ndarray, log_likelihood: float, step: int, final: bool
    ) -> None:
        now = time.monotonic()
        if math.isfinite(log_likelihood) and log_likelihood > self._best_ll:
            flat.flags.writeable = False  # leaves are views of this private copy
            fit = BestFit(
                log_likelihood=log_likelihood,
                parameters=spec.unflatten_numpy(flat[HEADER:]),
                step=step,
                created=now,
            )
            self._best_ll = log_likelihood
            self._best = fit
            self._held = fit
        else:
            self._stale += 1
        if self._held is not None and (final or now - self._last_delivery >= self._min_seconds):
            held, self._held = self._held, None
            self._deliver_locked(held, now)

    def _deliver_locked(self, fit: BestFit, now: float | None = None) -> None:
        # Inside the lock so deliveries reach the target in the order of their fits.
        self._last_delivery = time.monotonic() if now is None else now
        self._delivered += 1
        self._submit(fit)

    def _failure(self, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
        self._failure_log.record(error)

    def __repr__(self) -> str:
        best = None if self._best is None else self._best.log_likelihood
        return f"HostSink(name={self.name!r}, best={best!r}, target={self.target!r})"

