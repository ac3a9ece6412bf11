"""A live picture of the best fit for a loop someone else owns (NumPyro, BlackJAX, optax).

:class:`LiveView` is what the adapters share: the user's ``draw(best)``, the
latest-only worker that runs it off the sampler (a render process by default),
the :class:`~autofit_jaxviz.host.HostSink` that the in-jit callbacks feed, the
notebook's in-place image, and :meth:`LiveView.close`, which waits for every
callback the finished computation dispatched and draws the final best.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from autofit_jaxviz.backends import Backend
from autofit_jaxviz.config import load_settings
from autofit_jaxviz.device.lazy_jax import block_until_ready, effects_barrier
from autofit_jaxviz.history import PictureHistory, history_folder
from autofit_jaxviz.host.sink import HostSink
from autofit_jaxviz.notebook import display_for_run
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.png import write_png_atomically
from autofit_jaxviz.render.preview import preview_dpi
from autofit_jaxviz.render.process import ProcessRender
from autofit_jaxviz.render.pyplot import PyplotGuarded
from autofit_jaxviz.render.worker import QuickUpdateWorker, WorkerStats
from autofit_jaxviz.retention import Retention


class BestFitView(Protocol):
    """What an adapter draws through: a :class:`LiveView`, or a caller's own
    worker pipeline (the demo's adds the history of bests to every picture).

    ``sink`` takes the sampling phase's bests; ``worker.submit(best)`` gets the
    warm-up's until a sampling best has arrived; ``close`` waits for the run
    and its callbacks (a ``LiveView``'s then draws the final best at full dpi;
    the demo's leaves that to its worker's shutdown).
    """

    name: str
    sink: HostSink

    @property
    def worker(self) -> Any: ...

    def close(self, timeout: float | None = None, *, wait_for: Any = None) -> bool: ...


class FigureRender:
    """``draw(best)`` made into a render: a returned figure is saved, atomically.

    A class (not a closure) so that it pickles by reference to ``draw`` where it
    can, and by value (cloudpickle) where ``draw`` lives in a notebook or a
    script's ``__main__``. Quick updates are saved at the preview dpi; the final
    picture (``final=True`` payloads, see :meth:`LiveView.close`) at full dpi.
    """

    def __init__(self, draw: Callable[[BestFit], Any], image: Path, preview: float) -> None:
        self.draw = draw
        self.image = image
        self.preview = preview

    def __call__(self, best: BestFit) -> Any:
        dpi = None if isinstance(best, FinalFit) else (self.preview or None)
        with preview_dpi(dpi):
            drawn = self.draw(best)
            if hasattr(drawn, "savefig"):
                return str(write_png_atomically(drawn, self.image))
        if isinstance(drawn, str | os.PathLike | bytes):
            return drawn if not isinstance(drawn, bytes) else str(
                write_png_atomically(drawn, self.image))
        raise TypeError(
            f"draw(best) must return a matplotlib Figure (saved to {self.image}), PNG bytes "
            f"or the path it wrote, got {type(drawn).__name__}: {drawn!r}")


class FinalFit(BestFit):
    """The last best of a run: drawn at full resolution, whatever the render budget."""

    __slots__ = ()


class LiveView:
    """Draw the best fit of a jitted run while it runs, one picture at a time.

    Parameters
    ----------
    draw
        ``draw(best)`` -> a matplotlib ``Figure`` (build it with
        ``matplotlib.figure.Figure``, not pyplot), PNG bytes, or the path of a
        picture it wrote. ``best`` is a :class:`~autofit_jaxviz.BestFit`:
        ``parameters`` as the adapter describes (NumPy arrays),
        ``log_likelihood`` the score the run maximises, ``step`` the step
        that found it.
    image
        Where a returned figure is saved (``fit.png``).
    backend, render_budget, min_render_interval, preview_dpi, notebook_display, shutdown_timeout
        As in ``config/general.yaml``; ``None`` takes the configured value
        (keyword > ``AUTOFIT_JAXVIZ_*`` environment > workspace > packaged).
    history, viewer
        Also as configured: keep every picture in ``<image stem>_history/``
        beside ``image`` (:mod:`autofit_jaxviz.history`); start the live page
        on ``image``'s folder (``python -m autofit_jaxviz view``).

    One view draws one run: its best persists, so a second run through the
    same view only shows fits better than the first's; after :meth:`close`
    build a new one.
    """

    def __init__(
        self,
        draw: Callable[[BestFit], Any],
        *,
        image: str | os.PathLike[str] = "fit.png",
        backend: Backend | None = None,
        render_budget: float | None = None,
        min_render_interval: float | None = None,
        preview_dpi: float | None = None,
        notebook_display: bool | None = None,
        shutdown_timeout: float | None = None,
        history: bool | None = None,
        viewer: bool | None = None,
        name: str = "live-view",
    ) -> None:
        if not callable(draw):
            raise TypeError(f"draw must be callable with one BestFit, got {draw!r}")
        if not isinstance(image, str | os.PathLike):
            raise TypeError(f"image must be a path, got {type(image).__name__}: {image!r}")
        settings = load_settings(
            backend=backend, render_budget=render_budget, min_render_interval=min_render_interval,
            preview_dpi=preview_dpi, notebook_display=notebook_display,
            shutdown_timeout=shutdown_timeout, history=history, viewer=viewer)
        self.settings = settings
        self.image = Path(image).resolve()
        self.name = name
        #: every finished picture, numbered, with its index line (``None``: switched off)
        self.history = PictureHistory(
            history_folder(self.image), name=name, retention=Retention(
                settings.history_keep_recent, settings.history_keep_ratio),
        ) if settings.history else None
        if settings.viewer:
            from autofit_jaxviz.viewer.launch import ensure_viewer

            ensure_viewer(str(self.image.parent), settings.viewer_port)
        base = FigureRender(draw, self.image, settings.preview_dpi)
        display = display_for_run(settings.notebook_display)
        # in a thread: pyplot kept private to it (and, in a notebook, output kept in this cell)
        threaded = display.wrap_render(base, guard_pyplot=True) if display else PyplotGuarded(base)
        render: Callable[[BestFit], Any]
        if settings.backend == "process":
            # a draw that cannot be sent (it holds a lock, an open file) is drawn
            # in a thread instead, saying why
            render = ProcessRender(
                display.wrap_render(base, guard_pyplot=False) if display else base,
                name=name, fallback=threaded, chosen=settings.user_set("backend"))
        else:
            render = threaded if settings.backend == "thread" else base
        self._display = display
        #: the fit in the picture now (the last one drawn without an error)
        self.drawn: BestFit | None = None
        self.worker = QuickUpdateWorker(
            render, backend=settings.backend, name=name,
            min_interval=settings.min_render_interval, render_budget=settings.render_budget,
            on_rendered=self._on_rendered, shutdown_timeout=settings.shutdown_timeout)
        self.worker.prestart()
        self.sink = HostSink(self.worker, name=name)

    def _on_rendered(self, best: BestFit, result: Any) -> None:
        self.drawn = best
        if self.history is not None:
            self.history.record(result, best, final=isinstance(best, FinalFit))
        if self._display is not None:
            self._display.on_rendered(best, result)

    @property
    def stats(self) -> WorkerStats:
        return self.worker.stats

    @property
    def best(self) -> BestFit | None:
        """The best fit the callbacks have delivered so far."""
        return self.sink.best

    def close(self, timeout: float | None = None, *, wait_for: Any = None,
              error: BaseException | None = None) -> bool:
        """After the run: wait for its callbacks, draw the final best (full dpi,
        no budget wait), stop the worker. True if everything finished in time.

        ``wait_for`` (the run's result, any pytree of arrays) is waited on first:
        ``jax.effects_barrier`` does not wait for a computation still in flight
        under ``pmap`` (measured, JAX 0.11.2), whose callbacks would then arrive
        after the worker stopped. ``error``: the run raised it (the history
        says the run failed, and why).
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        done = block_until_ready(wait_for, timeout) if wait_for is not None else True
        done = effects_barrier(max(0.0, deadline - time.monotonic())) and done
        self.sink.flush()
        best = self.sink.best
        if best is not None:
            final = FinalFit(best.log_likelihood, best.parameters, best.step, best.created)
            self.worker.submit(final, final=True)
        finished = self.worker.shutdown(max(0.0, deadline - time.monotonic())) and done
        if self.history is not None:
            self.history.finish("finished" if error is None else "failed",
                                None if error is None else f"{type(error).__name__}: {error}")
        return finished

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self.close(error=error)

    def __repr__(self) -> str:
        return f"LiveView(image={str(self.image)!r}, backend={self.worker.backend!r})"
