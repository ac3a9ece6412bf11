"""The demo's picture: data, best model, residuals and the best log-likelihood against step."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autofit_jaxviz.demo.model import (
    Observation,
    describe_parameters,
    log_norm,
    pixel_grid,
    sersic_image,
)
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.worker import QuickUpdateWorker

if TYPE_CHECKING:
    pass


#: Size of the rendered PNG in pixels (width, height).
IMAGE_SIZE = (1200, 820)
_DPI = 100
_FLUX_TICKS = (-1, 0, 1, 3, 10, 30, 100, 300, 1000)

@dataclass(frozen=True, slots=True)
class DemoFrame:
    """What the renderer draws: one best fit plus the history leading to it.

    ``history`` is ``(k, 2)``: ``[step, log_likelihood]`` of every best fit the
    host received up to and including ``best`` (read-only). ``elapsed`` is the
    seconds from the start of sampling to the host receiving ``best``. The
    ``log_likelihood``/``parameters``/``step`` properties let code written for
    a :class:`~autofit_jaxviz.payload.BestFit` read a frame too.
    """

    best: BestFit
    history: np.ndarray
    elapsed: float
    total_steps: int
    warmup: int

    @property
    def log_likelihood(self) -> float:
        return self.best.log_likelihood

    @property
    def parameters(self) -> Any:
        return self.best.parameters

    @property
    def step(self) -> int:
        return self.best.step


class FrameSource:
    """The HostSink's target: record every best fit, hand the worker a frame.

    Runs on XLA's callback thread while the sampler waits, so it only appends
    two numbers and passes a read-only view (no copy) of the history.
    """

    def __init__(self, worker: QuickUpdateWorker, *, total_steps: int, warmup: int) -> None:
        self.worker = worker
        self.total_steps = total_steps
        self.warmup = warmup
        self.started = time.monotonic()
        self._history = np.empty((256, 2), np.float64)
        self._count = 0
        self.latest: BestFit | None = None  # read by the progress line

    def submit(self, best: BestFit) -> bool:
        if self._count == len(self._history):
            # a new buffer: views handed out earlier keep the old one alive, unchanged
            self._history = np.concatenate([self._history, np.empty_like(self._history)])
        self._history[self._count] = (best.step, best.log_likelihood)
        self._count += 1
        self.latest = best
        history = self._history[: self._count]
        history.flags.writeable = False
        frame = DemoFrame(
            best=best,
            history=history,
            elapsed=best.created - self.started,
            total_steps=self.total_steps,
            warmup=self.warmup,
        )
        return self.worker.submit(frame)


class FitRenderer:
    """Draw a :class:`DemoFrame` to one PNG, replaced atomically; returns the PNG's path.

    A plain module-level class holding only NumPy data and strings, so it
    pickles into a ``--backend process`` render process. It draws with
    ``matplotlib.figure.Figure`` and the Agg canvas, never pyplot (not thread
    safe, and it would leak figures into a notebook). Readers never see a
    half-written file: the PNG is written under a temporary name in the same
    folder and moved over the old one with ``os.replace``.
    """

    def __init__(self, observation: Observation, path: Path | str) -> None:
        self.data = np.asarray(observation.data, np.float32)
        self.noise_sigma = float(observation.noise_sigma)
        self.pixel_scale = float(observation.pixel_scale)
        self.extent = observation.extent
        self.truth = np.asarray(observation.truth, np.float64)
        self.log_norm = log_norm(observation)
        self.path = str(Path(path).absolute())

    def model(self, params: Any) -> np.ndarray:
        x, y = pixel_grid(self.data.shape, self.pixel_scale)
        return sersic_image(np.asarray(params, np.float64), x, y)

    def __call__(self, frame: DemoFrame) -> Path:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = self.draw(frame)
        FigureCanvasAgg(fig)
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.png")
        try:
            fig.savefig(tmp, format="png", dpi=_DPI)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def draw(self, frame: DemoFrame) -> Any:
        """Build the figure (no file I/O): data | model | residuals, log L history below."""
        from matplotlib.colors import AsinhNorm
        from matplotlib.figure import Figure

        params = np.asarray(frame.parameters, np.float64).reshape(-1)
        model = self.model(params)
        residuals = (self.data - model) / self.noise_sigma
        chi2 = float(np.mean(residuals * residuals))

        fig = Figure(figsize=(IMAGE_SIZE[0] / _DPI, IMAGE_SIZE[1] / _DPI), dpi=_DPI,
                     layout="constrained")
        grid = fig.add_gridspec(2, 3, height_ratios=[1.15, 0.85])
        phase = "warm-up" if frame.step < frame.warmup else "sampling"
        fig.suptitle(
            f"Sersic fit, BlackJAX NUTS in one jit: best fit at step {frame.step:,} of "
            f"{frame.total_steps:,} ({phase}), {frame.elapsed:.1f} s into sampling, "
            f"log L = {frame.log_likelihood:,.2f}\n"
            f"best  {describe_parameters(params)}\n"
            f"truth {describe_parameters(self.truth)}",
            fontsize=11,
        )

        norm = AsinhNorm(linear_width=2 * self.noise_sigma,
                         vmin=-3 * self.noise_sigma, vmax=float(self.data.max()))
        # data and model share one stretch (asinh: the noise and the bright core both show)
        for col, (title, image) in enumerate((("data", self.data), ("best model", model))):
            ax = fig.add_subplot(grid[0, col])
            shown = ax.imshow(image, origin="lower", extent=self.extent, norm=norm,
                              cmap="viridis", interpolation="nearest")
            bar = fig.colorbar(shown, ax=ax, shrink=0.85, label="flux per pixel")
            ticks = [t for t in _FLUX_TICKS if norm.vmin <= t <= norm.vmax]
            bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
            self._label_image(ax, title)

        limit = max(float(np.max(np.abs(residuals))), 1e-6)
        ax = fig.add_subplot(grid[0, 2])
        shown = ax.imshow(residuals, origin="lower", extent=self.extent, cmap="RdBu_r",
                          vmin=-limit, vmax=limit, interpolation="nearest")
        fig.colorbar(shown, ax=ax, shrink=0.85, label="(data − model) / σ")
        self._label_image(ax, f"normalised residuals, χ²/pixel = {chi2:.2f}")

        self._draw_history(fig.add_subplot(grid[1, :]), frame)
        return fig

    @staticmethod
    def _label_image(ax: Any, title: str) -> None:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x [arcsec]")
        ax.set_ylabel("y [arcsec]")

    def _draw_history(self, ax: Any, frame: DemoFrame) -> None:
        history = np.asarray(frame.history, np.float64).reshape(-1, 2)
        # relative to the truth's log L: a fit starting ~10^4 below and ending a few
        # units above it reads well on a symmetric-log axis (the absolute is in the title)
        truth_ll = self._truth_log_likelihood()
        steps, values = history[:, 0], history[:, 1] - truth_ll
        current = frame.log_likelihood - truth_ll
        if frame.warmup:
            ax.axvspan(0, frame.warmup, color="0.92", zorder=0, label="warm-up (adaptation)")
        # the best is flat between improvements, up to the step this frame was found at
        ax.step(np.append(steps, frame.step), np.append(values, current), where="post",
                color="C0", lw=1.5,
                label="best log L so far: warm-up's, then the samples' (dots: improvements)")
        ax.plot(steps, values, "o", color="C0", ms=3)
        ax.plot([frame.step], [current], "o", color="C3", ms=7, zorder=3,
                label=f"drawn above: step {frame.step:,}")
        ax.axhline(0.0, color="0.3", ls="--", lw=1, label=f"log L at the truth ({truth_ll:,.1f})")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, max(frame.total_steps, 1))
        ax.set_yscale("symlog", linthresh=1.0)
        highest = max(float(np.max(values, initial=current)), 1.0)
        ax.set_ylim(top=10 ** math.ceil(math.log10(1.5 * highest + 1.0)))
        ax.set_xlabel("sampler step (symmetric log scale)")
        ax.set_ylabel("best log L − log L at truth")
        ax.set_title(f"best log-likelihood against step ({len(steps)} improvements reached "
                     "the host; symmetric log scales)", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)

    def _truth_log_likelihood(self) -> float:
        chi = (self.data - self.model(self.truth)) / self.noise_sigma
        return float(-0.5 * np.sum(chi * chi) + self.log_norm)
