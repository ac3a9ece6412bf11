"""One fit's routing: which backend draws it, the best on its way, the end of the fit.

The hub owns the fit's worker and lives in a registry keyed by the fitness
(never in the fitness's ``__dict__``), so a fitness pickles (Dynesty
checkpoints) and an unpickled copy in the same process finds it again; a copy
in any other process finds none (:func:`hub_for`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from autofit_jaxviz.autofit.pool import PoolForwarder
from autofit_jaxviz.autofit.render import (
    PYPLOT_LOCK,
    QUICK_UPDATE_IMAGE,
    AutofitRender,
    ResultFit,
)
from autofit_jaxviz.backends import Backend
from autofit_jaxviz.config import Settings
from autofit_jaxviz.device.lazy_jax import effects_barrier
from autofit_jaxviz.flags import log_backend_decision, needs_host_conversion
from autofit_jaxviz.history import PictureHistory, history_folder
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.process import ProcessRender
from autofit_jaxviz.render.pyplot import PyplotGuarded, pyplot_guard
from autofit_jaxviz.render.worker import QuickUpdateWorker
from autofit_jaxviz.retention import Retention

logger = logging.getLogger(__name__)

#: The clock the seconds-based cadence reads (a test may drive its own).
clock = time.monotonic
#: Every fit's hub, by the fitness's key.
hubs: dict[str, Hub] = {}
hubs_lock = threading.Lock()
#: Hubs whose sampling ended, waiting for autofit's result (by id of the analysis).
awaiting_result: dict[int, Hub] = {}
#: How many of them are kept (a fit interrupted between the two is forgotten).
MAX_AWAITING = 2  # fits that end at the same moment (threads); a failed one is let go


class Hub:
    """Per-fit routing: owns the worker; in a forked child, forwards to the parent."""

    def __init__(self, fitness: Any, settings: Settings, cores: int, in_jit: bool) -> None:
        self.owner = os.getpid()
        self.name = f"quick-update[{type(fitness.analysis).__name__}]"
        self.backend: Backend = log_backend_decision(settings, fitness.analysis, logger).backend
        render_args = (fitness.analysis, fitness.model, fitness.paths)
        convert = needs_host_conversion(fitness.analysis)
        from autofit_jaxviz.notebook import display_for_run

        display = display_for_run(settings.notebook_display)
        render: Callable[[BestFit], Any]
        if self.backend == "process":
            # serialized here, once: whether it can be sent is known before the fit
            # starts; should the render process fail later (it cannot load the
            # analysis), it is drawn by the render a thread would use
            self.render = AutofitRender(*render_args, convert=convert, lock_pyplot=False,
                                        preview_dpi=settings.preview_dpi)
            sent = ProcessRender(_in_fit_cell(display, self.render, guard_pyplot=False),
                                 name=self.name, chosen=settings.user_set("backend"),
                                 fallback=_thread_render(display, AutofitRender(
                                     *render_args, convert=convert, lock_pyplot=True,
                                     preview_dpi=settings.preview_dpi)))
            if sent.fallback_reason is None:
                render = sent
            else:
                _say_thread(self.name, sent.fallback_reason, settings.user_set("backend"))
                self.backend = "thread"
        if self.backend != "process":
            self.render = AutofitRender(*render_args, convert=convert,
                                        lock_pyplot=self.backend == "thread",
                                        preview_dpi=settings.preview_dpi)
            render = (_thread_render(display, self.render) if self.backend == "thread"
                      else _in_fit_cell(display, self.render, guard_pyplot=True))
        self.display_rendered = display.on_rendered if display is not None else None
        self.worker = QuickUpdateWorker(
            render, backend=self.backend, name=self.name,
            min_interval=settings.min_render_interval,
            render_budget=settings.render_budget,
            on_rendered=self._on_rendered,
            shutdown_timeout=settings.shutdown_timeout,
            rank=_log_likelihood,  # a late, worse fit from another producer is never drawn
        )
        self.shutdown_timeout = settings.shutdown_timeout
        #: a quick update every this many seconds instead of every N evaluations (0: off)
        self.quick_update_seconds = settings.quick_update_seconds
        self._last_due = clock()
        # spawn before the sampler opens its HDF5 backend (see ProcessRender.start)
        self.worker.prestart()
        self.best = -np.inf  # the best handed to the worker
        self.best_fit: BestFit | None = None
        self.drawn = -np.inf  # the best whose picture was drawn without an error
        self.drawn_fit: BestFit | None = None
        self.analysis = fitness.analysis
        self.output_path = _output_path(fitness)
        self.lock = threading.Lock()
        self.forwarder = PoolForwarder(self.name, self._children_due) if cores > 1 else None
        self.history = _history_of(fitness, settings)
        if settings.viewer:
            from autofit_jaxviz.viewer.launch import ensure_viewer

            ensure_viewer(_output_root(fitness), settings.viewer_port)
        self.sink = None
        if in_jit:
            from autofit_jaxviz.host.sink import HostSink

            self.sink = HostSink(self.offer_best, name=self.name)

    # called by the fitness ------------------------------------------------
    def improved(self, vector: Any, log_likelihood: float) -> None:
        """Every new best of this process's fitness. A forked child forwards it at
        once, so the parent always knows the global best (and draws it last)."""
        if os.getpid() != self.owner and self.forwarder is not None:
            self.forwarder.send_best(log_likelihood, vector)

    def due(self, vector: Any, log_likelihood: float, step: int) -> None:
        """autofit's cadence says a quick update is due."""
        if os.getpid() != self.owner:
            if self.forwarder is None:
                # a fork we were not told about: render in this process after all
                self._become_local()
            else:
                self.forwarder.send_due(step)
                return
        self.offer(vector, log_likelihood, step)

    def clock_due(self) -> bool:
        """With ``quick_update_seconds``: whether that long has passed since the
        last quick update fell due (the fit's start, for the first)."""
        now = clock()
        if now - self._last_due < self.quick_update_seconds:
            return False
        self._last_due = now
        return True

    def offer(self, vector: Any, log_likelihood: float, step: int) -> None:
        children = self.forwarder.best if self.forwarder is not None else None
        if children is not None and children[0] > log_likelihood:
            log_likelihood, vector = children
        self.offer_best(BestFit(float(log_likelihood), np.array(vector, dtype=float), step))

    def offer_best(self, best: BestFit) -> None:
        with self.lock:
            if not best.log_likelihood > self.best:
                return  # not better than what is already on its way: no new image
            self.best, self.best_fit = best.log_likelihood, best
        self.worker.submit(best)

    def _children_due(self, step: int) -> None:
        children = self.forwarder.best if self.forwarder is not None else None
        if children is not None:
            log_likelihood, vector = children
            self.offer_best(BestFit(log_likelihood, np.asarray(vector, dtype=float), step))

    def _on_rendered(self, best: BestFit, result: Any) -> None:
        with self.lock:
            # the last picture on disk, not a running maximum
            self.drawn, self.drawn_fit = best.log_likelihood, best
        if self.history is not None:
            self.history.record(result, best)
        if self.display_rendered is not None:
            self.display_rendered(best, result)

    def _become_local(self) -> None:
        self.owner = os.getpid()
        self.history = None  # the parent's history is the parent's to write
        self.best = self.drawn = -np.inf
        self.lock = threading.Lock()

    def close(self, vector: Any, log_likelihood: float, step: int) -> bool:
        """End of the fit: draw the global best (whatever the cadence), then stop."""
        if os.getpid() != self.owner:
            return True  # a child: the parent owns the worker
        # autofit shuts quick updates down from its `except` when the search raised
        # (an exception an outer `except` of the user's handles looks the same:
        # the success path's final update puts it right, see fit_succeeded)
        error = sys.exc_info()[1]
        deadline = time.monotonic() + self.shutdown_timeout
        children = None
        if self.forwarder is not None:
            self.forwarder.close(max(0.0, deadline - time.monotonic()))
            children = self.forwarder.best
        if self.sink is not None:
            # every callback the jitted search dispatched has arrived (bounded: a
            # failed fit's computation may still be running)
            effects_barrier(max(0.0, deadline - time.monotonic()))
            self.sink.flush()
        if vector is not None or children is not None:
            if vector is None:
                vector, log_likelihood = children[1], -np.inf
            self.offer(vector, log_likelihood, step)
        # The final best may have been handed on earlier and its picture failed
        # (a full disk for a moment): draw it again, so the image left behind
        # is of the fit that model.results names. Only once everything handed
        # on has finished (a render still running is not a failure), and only
        # for a visualizer that has worked at least once.
        if self.worker.flush(max(0.0, deadline - time.monotonic())):
            with self.lock:
                redraw = self.best_fit if self.drawn < self.best else None
            if redraw is not None and self.worker.stats.rendered > 0:
                self.worker.submit(redraw)
        with hubs_lock:
            for key, hub in list(hubs.items()):
                if hub is self:
                    del hubs[key]
            awaiting_result[id(self.analysis)] = self
            while len(awaiting_result) > MAX_AWAITING:  # fits whose result never came
                del awaiting_result[next(iter(awaiting_result))]
        finished = self.worker.shutdown(max(0.0, deadline - time.monotonic()))
        if self.history is not None:
            self.history.finish(
                "finished" if error is None else "failed",
                None if error is None else f"{type(error).__name__}: {error}")
        return finished

    def fit_succeeded(self) -> None:
        """autofit went on to its final update: the search did not raise."""
        if self.history is not None and self.history.status.get("state") != "finished":
            self.history.finish("finished")

    def draw_result(self, vector: Any, log_likelihood: float) -> bool:
        """After the fit: the picture left behind must show the maximum-likelihood
        sample of autofit's result. It usually is the last one drawn; where it is
        not (a jitted search saw only a thinned subsample of its evaluations, a
        resumed fit never saw the points evaluated before it stopped), it is
        drawn here, on the calling thread, as autofit's own final visuals are.
        Returns whether a picture was drawn; never raises."""
        with hubs_lock:
            if awaiting_result.get(id(self.analysis)) is self:
                del awaiting_result[id(self.analysis)]
        vector = np.asarray(vector, dtype=float)
        drawn = self.drawn_fit
        if drawn is not None and np.array_equal(np.asarray(drawn.parameters, float), vector):
            return False
        best = ResultFit(float(log_likelihood), vector, -1)
        try:
            with PYPLOT_LOCK, pyplot_guard():  # no figure of ours reaches a notebook cell
                result = self.render(best)
            if self.display_rendered is not None:
                self.display_rendered(best, result)
        except Exception:  # noqa: BLE001 - the fit is done; its result must still be returned
            logger.exception("%s: the result's maximum-likelihood fit could not be drawn",
                             self.name)
            return False
        with self.lock:
            self.drawn, self.drawn_fit = best.log_likelihood, best
        if self.history is not None:
            self.history.record(result, best, final=True)
        return True


def _log_likelihood(best: BestFit) -> float:
    return best.log_likelihood


def _in_fit_cell(display: Any, render: Callable[[BestFit], Any], *,
                 guard_pyplot: bool) -> Callable[[BestFit], Any]:
    """In a notebook: text from the render stays in the fit's cell, and pyplot
    figures a visualizer opens on the render thread never reach the inline backend."""
    return render if display is None else display.wrap_render(render, guard_pyplot=guard_pyplot)


def _thread_render(display: Any, render: Callable[[BestFit], Any]) -> Callable[[BestFit], Any]:
    """A render for the renderer thread: pyplot kept private to it."""
    if display is not None:
        return display.wrap_render(render, guard_pyplot=True)
    return PyplotGuarded(render)


def _say_thread(name: str, reason: str, chosen: bool) -> None:
    """The analysis cannot go to a render process: a warning if the user chose
    the process backend, information if it was only the default."""
    level = logging.WARNING if chosen else logging.INFO
    logger.log(level, "%s: rendering in a thread, not in a render process%s, because %s",
               name, "" if chosen else " (the default)", reason)


def hub_for(fitness: Any) -> Hub | None:
    """The hub of the fit this fitness belongs to, in this process; ``None``
    where there is none to draw with.

    Only the process that runs the search owns a worker (a forked pool worker
    finds its parent's hub and forwards to it). A copy unpickled anywhere else
    (a ``spawn`` or ``forkserver`` pool worker, a dask or MPI worker, another
    interpreter) gets none, so it never starts a render process or writes
    ``fit.png``; except that a copy restored by the process running the same fit
    (a Dynesty checkpoint resumed after a crash) joins that fit's hub. After the
    fit ended there is none either: autofit still evaluates the best fit once
    after shutting quick updates down, and that must not start a new worker.
    """
    if fitness.__dict__.get("_jaxviz_closed", False):
        return None
    key = fitness._jaxviz_key
    with hubs_lock:
        hub = hubs.get(key)
        if hub is None:
            hub = _running_fit_of(fitness)
            if hub is not None:
                hubs[key] = hub  # dropped with the hub's own key when the fit ends
        return hub


def _history_of(fitness: Any, settings: Settings) -> PictureHistory | None:
    """The fit's picture history beside ``fit.png`` (``None`` when switched off)."""
    if not settings.history:
        return None
    try:
        image = os.path.join(str(fitness.paths.image_path), QUICK_UPDATE_IMAGE)
        name = str(getattr(fitness.paths, "name", "") or type(fitness.analysis).__name__)
    except Exception:  # noqa: BLE001 - paths without an image folder: nothing to keep
        logger.debug("no image folder for the picture history", exc_info=True)
        return None
    try:
        names = [str(n) for n in fitness.model.model_component_and_parameter_names]
    except Exception:  # noqa: BLE001 - a model without names: the vector alone
        names = None
    return PictureHistory(history_folder(image), name=name, names=names, retention=Retention(
        settings.history_keep_recent, settings.history_keep_ratio))


def _output_root(fitness: Any) -> str:
    """The folder the page viewer lists fits under: autofit's output root."""
    try:
        from autonerves import conf

        return str(conf.instance.output_path)
    except Exception:  # noqa: BLE001 - no autonerves output path: this fit's folder
        return str(fitness.paths.output_path)


def _output_path(fitness: Any) -> str | None:
    try:
        return str(fitness.paths.output_path)
    except Exception:  # noqa: BLE001 - no paths of its own: never matched
        return None


def _running_fit_of(fitness: Any) -> Hub | None:
    path = _output_path(fitness)
    if path is None:
        return None
    here = os.getpid()
    for hub in hubs.values():
        if hub.owner == here and hub.output_path == path:
            return hub
    return None
