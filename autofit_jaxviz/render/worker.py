"""The latest-only render worker.

A sampler produces best fits far faster than anyone can draw them, and a quick
update is only ever worth showing for the *newest* best fit. So the worker keeps
a single slot: ``submit`` drops the payload into it (replacing an older one that
was never drawn) and returns at once; one renderer takes whatever is newest when
it is free. The sampler never waits for matplotlib, and nothing it submits is
lost, only superseded.

Three backends (:mod:`autofit_jaxviz.backends`) share one contract: a
renderer thread (``"thread"``, the default here), the same thread handing each
payload to a separate render process (``"process"``, see
:mod:`autofit_jaxviz.render.process`), or the render inside ``submit``
(``"sync"``).

Render failures are counted and logged, never raised into the sampler.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autofit_jaxviz.backends import BACKENDS, Backend
from autofit_jaxviz.failure_log import FailureLog
from autofit_jaxviz.render import lifecycle
from autofit_jaxviz.render.pacing import RenderPace
from autofit_jaxviz.render.process import ProcessRender, RenderCancelled

logger = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A consistent snapshot of what the worker has done so far."""

    submitted: int
    rendered: int
    superseded: int
    failed: int
    rejected: int
    pending: bool
    rendering: bool
    mean_render_seconds: float
    max_render_seconds: float
    mean_lag_seconds: float
    max_lag_seconds: float
    process_starts: int = 0
    process_restarts: int = 0
    #: submits dropped because they ranked below a payload already accepted
    outranked: int = 0
    #: rendering's core time (a render process's CPU time, a thread's wall
    #: time) as a share of wall time, over the completed cycles (each
    #: render and the wait after it) from the second render's start to the last
    #: start: what ``render_budget`` limits (the first render's set-up is not)
    render_share: float = 0.0


class _Item:
    """A submitted payload with its sequence number and submit time."""

    __slots__ = ("final", "payload", "seq", "submitted_at")

    def __init__(self, payload: Any, seq: int, submitted_at: float, final: bool = False) -> None:
        self.payload = payload
        self.seq = seq
        self.submitted_at = submitted_at
        self.final = final


class QuickUpdateWorker:
    """Render the newest submitted payload, off the sampler's thread.

    Parameters
    ----------
    render
        Called with one payload; draws and saves it. Its return value is passed
        to ``on_rendered``.
    backend
        ``"thread"``, ``"process"`` or ``"sync"`` (see the module docstring).
        With ``"process"``, ``render`` must be picklable; if it is not, the
        worker says which part is not, once, and renders in its thread.
    name
        Used for the thread's name and in log lines.
    min_interval
        Seconds to leave between the starts of two renders. Payloads that
        arrive meanwhile supersede each other; ``flush`` and ``shutdown`` skip
        the wait so the final best fit is never delayed.
    render_budget
        The share of one core's time rendering may take on average,
        ``0 < render_budget <= 1``: after renders that cost ``c`` seconds of
        core time (the mean of the last few; a render process's CPU time) the
        next one starts ``c / b`` after the last one started, and not before
        it ended. With ``min_interval`` too, the later of the two waits
        applies. Skipped like ``min_interval`` by ``flush``/``shutdown``.
    on_rendered
        Called on the renderer after each successful render with
        ``(payload, result)``; used by the notebook display. Its failures are
        counted like render failures.
    shutdown_timeout
        The timeout the interpreter-exit hook gives ``shutdown``.
    rank
        Optional ``rank(payload) -> float`` (for best fits: the log-likelihood).
        A payload ranked below one already accepted is dropped (``submit``
        returns ``False``, counted in ``stats.outranked``), so with several
        producers (a pool listener, the sampler thread, XLA's callback
        thread) a worse fit that arrives late is never drawn after a better
        one. ``submit(..., final=True)`` bypasses it.
    """

    def __init__(
        self,
        render: Callable[[Any], Any],
        *,
        backend: Backend = "thread",
        name: str = "quick-update",
        min_interval: float = 0.0,
        render_budget: float = 1.0,
        on_rendered: Callable[[Any, Any], None] | None = None,
        shutdown_timeout: float = 30.0,
        rank: Callable[[Any], float] | None = None,
    ) -> None:
        if not callable(render):
            raise TypeError(f"render must be callable, got {render!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(min_interval, int | float) or not min_interval >= 0:
            raise ValueError(f"min_interval must be a number >= 0 seconds, got {min_interval!r}")
        if (not isinstance(render_budget, int | float) or isinstance(render_budget, bool)
                or not 0 < render_budget <= 1):
            raise ValueError(f"render_budget must be a number > 0 and <= 1 (a share of one "
                             f"core's time), got {render_budget!r}")
        if rank is not None and not callable(rank):
            raise TypeError(f"rank must be callable or None, got {rank!r}")
        if on_rendered is not None and not callable(on_rendered):
            raise TypeError(f"on_rendered must be callable or None, got {on_rendered!r}")
        if not isinstance(shutdown_timeout, int | float) or not shutdown_timeout > 0:
            raise ValueError(
                f"shutdown_timeout must be a number > 0 seconds, got {shutdown_timeout!r}"
            )
        self._process_render: ProcessRender | None = None
        if backend == "process":
            # a ProcessRender the caller built (to learn early whether the
            # render can be sent) is used as it is: serialized once
            if not isinstance(render, ProcessRender):
                render = ProcessRender(render, name=name)
            self._process_render = render
        self._render = render
        self._backend: Backend = backend
        self.name = name
        self._min_interval = float(min_interval)
        self._render_budget = float(render_budget)  # both read by _fresh_state
        self._on_rendered = on_rendered
        self._rank = rank
        self.shutdown_timeout = float(shutdown_timeout)
        self._fresh_state()
        lifecycle.track(self)

    def _fresh_state(self) -> None:
        """(Re)create every lock and counter; also used in a forked child."""
        self._cond = threading.Condition(threading.Lock())
        self._render_lock = threading.Lock()  # serialises renders with the sync backend
        self._slot: _Item | None = None
        self._in_render: _Item | None = None
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._stopped = False
        self._disabled = False
        self._urgent = 0  # how many flush/shutdown calls want min_interval skipped
        self._last_render_start = float("-inf")
        self._pace = RenderPace(self._min_interval, self._render_budget)
        self._owner_pid = os.getpid()
        # counters
        self._submitted = 0
        self._rendered = 0
        self._superseded = 0
        self._failed = 0
        self._rejected = 0
        self._outranked = 0
        self._best_rank = float("-inf")
        self._render_total = 0.0
        self._render_max = 0.0
        self._lag_total = 0.0
        self._lag_max = 0.0
        self._failure_log = FailureLog(logger, self.name, "quick-update render")

    # ------------------------------------------------------------------ API

    @property
    def backend(self) -> Backend:
        """Where this worker draws (``"thread"``, ``"process"`` or ``"sync"``)."""
        return self._backend

    @property
    def enabled(self) -> bool:
        """False once shut down, or once the render said ``NotImplementedError``."""
        return not (self._closing or self._disabled)

    def submit(self, payload: Any, *, final: bool = False) -> bool:
        """Offer ``payload`` for rendering; replaces any payload not yet drawn.

        Returns ``True`` when it was accepted, ``False`` when the worker is shut
        down or disabled (counted as rejected) or the payload ranks below one
        already accepted (counted as outranked; see ``rank``). ``final=True``
        marks the authoritative last payload (the fit's result): it is accepted
        whatever its rank. Never blocks on a render with the ``"thread"``
        backend and never raises.
        """
        if self._owner_pid != os.getpid():  # forked child without the at-fork hook
            self._fresh_state()
        key = self._rank_of(payload)
        cond = self._cond
        with cond:
            if self._closing or self._disabled:
                self._rejected += 1
                return False
            if key is not None or final:
                if not final and key < self._best_rank:
                    self._outranked += 1
                    return False
                # after the final payload only another final one is drawn
                self._best_rank = math.inf if final else max(key, self._best_rank)
            self._seq += 1
            self._submitted += 1
            item = _Item(payload, self._seq, time.monotonic(), final)
            if self._slot is not None:
                self._superseded += 1
            self._slot = item
            if self._backend != "sync":
                if self._thread is None:
                    self._start_thread()
                cond.notify_all()
                return True
        # sync backend: render on the caller's thread, one render at a time
        with self._render_lock:
            with cond:
                item = self._take_locked()
            if item is not None:
                self._render_item(item)
        return True

    def prestart(self) -> None:
        """Start the render process now (``"process"`` backend; a no-op otherwise).

        The worker normally starts it at the first render, so short runs pay
        nothing. Call this before a sampler opens files it locks (see
        :meth:`autofit_jaxviz.render.process.ProcessRender.start`).
        """
        if self._process_render is not None and not self._closing:
            self._process_render.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every payload submitted before this call is rendered or
        superseded. Returns ``False`` if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._urgent += 1
            self._cond.notify_all()
            try:
                while not self._done_through(target):
                    if self._thread is None or not self._thread.is_alive():
                        if self._backend != "sync" and self._slot is not None:
                            # nobody left to render it (stopped, or hung thread gone)
                            return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._urgent -= 1

    def render_running_for(self) -> float:
        """Seconds the render in progress has been running (0 when none is)."""
        with self._cond:
            if self._in_render is None:
                return 0.0
        return max(0.0, time.monotonic() - self._last_render_start)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Render what is pending, stop the renderer and join it.

        Idempotent and safe from ``atexit``. Never waits longer than
        ``timeout`` (default: the worker's ``shutdown_timeout``); returns
        ``False`` (and logs a warning) if the renderer did not finish in time.
        Payloads submitted afterwards are rejected.
        """
        if timeout is None:
            timeout = self.shutdown_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._stopped and self._thread is not None and self._thread.is_alive():
                return False  # an earlier shutdown gave up on a hung render: said then
            self._closing = True
            self._urgent += 1  # never released: after shutdown nothing waits
            self._cond.notify_all()
            thread = self._thread
        if self._backend == "sync" or thread is None:
            with self._cond:
                self._stopped = True
            if self._process_render is not None:
                self._process_render.close()
            return True
        interrupted = True
        try:
            finished = self.flush(timeout=max(0.0, deadline - time.monotonic()))
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
            interrupted = False
        finally:
            # Also when a second Ctrl-C lands in the waits above: the render
            # process must not outlive the shutdown that was asked for.
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
            if self._process_render is not None:
                # stops the child even mid-render, which also frees a renderer
                # thread blocked waiting for it
                left = 0.3 if interrupted else (deadline - time.monotonic()) / 3
                self._process_render.close(timeout=max(0.1, left))
                if not interrupted and thread is not threading.current_thread():
                    thread.join(max(0.1, deadline - time.monotonic()))
        # how long the render that outlived the timeout had been running (the
        # caller may have waited for it before calling shutdown)
        running = time.monotonic() - self._last_render_start
        if thread.is_alive():
            logger.warning(
                "%s: shutdown timed out (%.1f s) with a render still running after %.1f s; "
                "the renderer thread is abandoned (daemon)",
                self.name,
                timeout,
                running,
            )
            return False
        if not finished:
            logger.warning(
                "%s: shutdown timed out (%.1f s) with a render still running after %.1f s; "
                "it was stopped with its render process",
                self.name,
                timeout,
                running,
            )
        return finished

    @property
    def stats(self) -> WorkerStats:
        with self._cond:
            rendered = self._rendered
            attempts = rendered + self._failed
            return WorkerStats(
                submitted=self._submitted,
                rendered=rendered,
                superseded=self._superseded,
                failed=self._failed,
                rejected=self._rejected,
                pending=self._slot is not None,
                rendering=self._in_render is not None,
                mean_render_seconds=self._render_total / attempts if attempts else 0.0,
                max_render_seconds=self._render_max,
                mean_lag_seconds=self._lag_total / rendered if rendered else 0.0,
                max_lag_seconds=self._lag_max,
                process_starts=self._process_render.starts if self._process_render else 0,
                process_restarts=self._process_render.restarts if self._process_render else 0,
                outranked=self._outranked,
                render_share=self._pace.share(),
            )

    def __enter__(self) -> QuickUpdateWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (f"QuickUpdateWorker(name={self.name!r}, backend={self._backend!r}, "
                f"enabled={self.enabled})")

    # ------------------------------------------------------------ internals

    def _rank_of(self, payload: Any) -> float | None:
        if self._rank is None:
            return None
        try:
            key = float(self._rank(payload))
        except Exception:  # an unrankable payload is drawn, never raised into the sampler
            return None
        return key if key == key else None  # NaN ranks nowhere: treat as unranked

    def _done_through(self, target: int) -> bool:
        """True when no payload with ``seq <= target`` is waiting or rendering."""
        slot, current = self._slot, self._in_render
        return (slot is None or slot.seq > target) and (current is None or current.seq > target)

    def _take_locked(self) -> _Item | None:
        item = self._slot
        self._slot = None
        self._in_render = item
        return item

    def _start_thread(self) -> None:
        # Daemon, so a render that hangs forever cannot keep the interpreter
        # alive; the atexit hook joins it (with a timeout) before finalisation,
        # so a normal exit never tears down a thread mid-draw.
        thread = threading.Thread(target=self._run, name=f"{self.name}-renderer", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._slot is not None:
                        wait = self._pace.next_start() - time.monotonic()
                        if wait <= 0 or self._urgent or self._slot.final:
                            break
                        cond.wait(wait)
                        continue
                    if self._stopped:
                        return
                    cond.wait()
                item = self._take_locked()
            self._render_item(item)
            del item

    def _render_item(self, item: _Item) -> None:
        started = time.monotonic()
        self._last_render_start = started
        with self._cond:
            self._pace.started(started)
        ok = False
        try:
            result = self._render(item.payload)
            if self._on_rendered is not None:
                self._on_rendered(item.payload, result)
            ok = True
        except NotImplementedError:
            self._disable()
        except RenderCancelled:
            pass  # shutdown cut it short and says so itself
        except Exception as error:
            self._record_failure(error)
        finally:
            finished = time.monotonic()
            process = self._process_render
            child_times = None if process is None else process.last_child_times
            with self._cond:
                seconds = finished - started
                self._pace.finished(started, finished, child_times)
                self._render_total += seconds
                self._render_max = max(self._render_max, seconds)
                if ok:
                    self._rendered += 1
                    lag = finished - item.submitted_at
                    self._lag_total += lag
                    self._lag_max = max(self._lag_max, lag)
                else:
                    self._failed += 1
                self._in_render = None
                self._cond.notify_all()

    def _disable(self) -> None:
        with self._cond:
            already = self._disabled
            self._disabled = True
            if self._slot is not None:
                self._slot = None
                self._superseded += 1
        if not already:
            logger.info(
                "%s: the render function raised NotImplementedError (the analysis has no "
                "quick update); quick updates are off for this worker",
                self.name,
            )

    def _record_failure(self, error: Exception) -> None:
        self._failure_log.record(error)

    def _after_fork_in_child(self) -> None:
        # The renderer thread does not exist in the child and its locks may have
        # been held at the fork: start again from a clean, working state. The
        # parent's render process belongs to the parent.
        self._fresh_state()
        if self._process_render is not None:
            self._process_render.forget_after_fork()
