"""The live demo: fit a simulated galaxy with a fully jitted NUTS sampler and watch its best fit.

What it shows: a BlackJAX NUTS sampler, warm-up adaptation included, runs as
**one** jitted ``lax.scan`` with no Python between steps. A
:class:`~autofit_jaxviz.callback.BestFitTracker` in the scan's carry calls the
host only when the best fit improved; the host hands it to a latest-only
:class:`~autofit_jaxviz.worker.QuickUpdateWorker` that redraws ``fit.png``
(data, best model, normalised residuals, best log-likelihood against step)
while the sampler keeps running. ``--no-viz`` runs the same sampler without
any hook, as the baseline for the cost of watching.

The model: an elliptical Sersic light profile on a 100x100 pixel image
(0.1 arcsec pixels) plus Gaussian noise of known sigma. Seven unconstrained
parameters, so NUTS needs no bijectors: centre ``x, y`` (arcsec), ellipticity
``g1, g2`` (mapped smoothly into the unit disc), ``log_intensity`` (at the
effective radius), ``log_radius`` (effective radius, arcsec) and
``log_index`` (Sersic index). Weak Gaussian priors on all seven keep the
posterior proper. The sampler starts well away from the truth, so the picture
visibly improves during warm-up.

The log-likelihood history in the picture: every best fit the host receives
(not only the rendered ones) is appended to a history on the host, and each
frame handed to the renderer carries the history up to its own best fit. So
the curve is complete up to the drawn fit even when the latest-only worker
skipped (superseded) frames, and it survives a restart of the render process.
Between two improvements the best is flat by definition; the curve is drawn
as steps.

The sampler runs in float32; with JAX's x64 switched on (importing autofit
does that) it follows JAX's default and runs in float64.

Nothing here imports JAX or BlackJAX at module level: the renderer (which a
``--backend process`` render process unpickles) needs only NumPy and
matplotlib, and a missing package is reported by :func:`require_sampler`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import numpy as np

from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.worker import QuickUpdateWorker, WorkerMode, WorkerStats

if TYPE_CHECKING:
    from autofit_jaxviz.callback import BestFitTracker

__all__ = [
    "DemoFrame",
    "DemoResult",
    "FitRenderer",
    "MissingDependencyError",
    "Observation",
    "PARAMETER_NAMES",
    "add_arguments",
    "command",
    "log_likelihood",
    "physical_parameters",
    "require_sampler",
    "run_demo",
    "sersic_image",
    "simulate",
]

# --------------------------------------------------------------------------- the model

PARAMETER_NAMES = ("x", "y", "g1", "g2", "log_intensity", "log_radius", "log_index")
IMAGE_SHAPE = (100, 100)
PIXEL_SCALE = 0.1  # arcsec per pixel
NOISE_SIGMA = 0.5  # per pixel, in the image's flux units

#: The simulated galaxy: centre (0.3, -0.2)", axis ratio 0.46 at 15 deg,
#: intensity 2.0 at the effective radius 1.0", Sersic index 2.
TRUTH = np.array([0.3, -0.2, 0.35, 0.2, math.log(2.0), math.log(1.0), math.log(2.0)], np.float32)
#: Where the sampler starts: offset, round, too faint, too big, exponential.
START = np.array([-1.5, 1.2, 0.0, 0.0, math.log(0.5), math.log(2.5), 0.0], np.float32)
PRIOR_MEAN = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(2.5)], np.float32)
PRIOR_SIGMA = np.array([2.0, 2.0, 1.0, 1.0, 2.0, 1.0, 0.6], np.float32)

DEFAULT_STEPS = 3000
DEFAULT_WARMUP = 500
DEFAULT_OUTPUT = Path("demo_output")
IMAGE_NAME = "fit.png"
BACKENDS = ("thread", "process", "sync")
#: Size of the rendered PNG in pixels (width, height).
IMAGE_SIZE = (1200, 820)
_DPI = 100
_FLUX_TICKS = (-1, 0, 1, 3, 10, 30, 100, 300, 1000)
#: Progress ticks from inside the scan: about this many per run.
_TICKS = 100


def pixel_grid(shape: tuple[int, int] = IMAGE_SHAPE, scale: float = PIXEL_SCALE) -> tuple:
    """Pixel-centre coordinates in arcsec, origin at the centre, y up (row 0 at the bottom)."""
    rows, cols = shape
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) * scale
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) * scale
    return np.meshgrid(x, y)


def _sersic_b(n: Any) -> Any:
    """Ciotti & Bertin's (1999) expansion of b_n, so I(R_e) is the intensity parameter."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_image(params: Any, x: Any, y: Any, xp: Any = np) -> Any:
    """The model image for one parameter vector, with NumPy (``xp=np``) or ``jax.numpy``.

    One implementation for both, so the picture shows exactly the model the
    sampler fits. The elliptical radius is written in (e1, e2) without square
    roots or angles, so it is smooth everywhere (also at e = 0).
    """
    x0, y0, g1, g2, log_i, log_r, log_n = (params[i] for i in range(7))
    # (g1, g2) in the plane -> (e1, e2) in the unit disc; 1 - |e|^2 = 1 / (1 + |g|^2)
    g2sum = 1.0 + g1 * g1 + g2 * g2
    norm = xp.sqrt(g2sum)
    e1, e2 = g1 / norm, g2 / norm
    dx, dy = x - x0, y - y0
    r2 = g2sum * (
        (1.0 + e1 * e1 + e2 * e2) * (dx * dx + dy * dy)
        - 2.0 * (e1 * (dx * dx - dy * dy) + 2.0 * e2 * dx * dy)
    )
    n = xp.exp(log_n)
    # (r / R)^(1/n); the small floor keeps the gradient finite at the very centre
    scaled = ((r2 + 1e-6) * xp.exp(-2.0 * log_r)) ** (0.5 / n)
    return xp.exp(log_i - _sersic_b(n) * (scaled - 1.0))


def physical_parameters(params: Any) -> dict[str, float]:
    """The fit in the usual terms: centre, axis ratio q, position angle (deg), R_e, n, I_e."""
    p = np.asarray(params, dtype=np.float64)
    g = math.hypot(p[2], p[3])
    e = g / math.sqrt(1.0 + g * g)
    return {
        "x": float(p[0]),
        "y": float(p[1]),
        "q": (1.0 - e) / (1.0 + e),
        "angle": math.degrees(0.5 * math.atan2(p[3], p[2])) % 180.0,
        "radius": math.exp(p[5]),
        "index": math.exp(p[6]),
        "intensity": math.exp(p[4]),
    }


def _describe_parameters(params: Any, degree: str = "°") -> str:
    p = physical_parameters(params)
    return (
        f"centre ({p['x']:+.2f}, {p['y']:+.2f})\"  q {p['q']:.2f}  PA {p['angle']:.0f}{degree}  "
        f"R_e {p['radius']:.2f}\"  n {p['index']:.2f}  I_e {p['intensity']:.2f}"
    )


@dataclass(frozen=True)
class Observation:
    """A simulated image with its (known, uniform) noise."""

    data: np.ndarray  # (rows, cols) float32
    noise_sigma: float
    pixel_scale: float
    truth: np.ndarray
    seed: int

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent in arcsec (pixel edges)."""
        rows, cols = self.data.shape
        half_x, half_y = cols * self.pixel_scale / 2, rows * self.pixel_scale / 2
        return (-half_x, half_x, -half_y, half_y)


def simulate(seed: int = 0, truth: np.ndarray = TRUTH) -> Observation:
    """The seeded galaxy image: the Sersic model at ``truth`` plus Gaussian noise."""
    x, y = pixel_grid()
    clean = sersic_image(np.asarray(truth, np.float64), x.astype(np.float64), y.astype(np.float64))
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, size=clean.shape)
    return Observation(
        data=(clean + noise).astype(np.float32),
        noise_sigma=NOISE_SIGMA,
        pixel_scale=PIXEL_SCALE,
        truth=np.asarray(truth, np.float32),
        seed=seed,
    )


def log_likelihood(params: Any, observation: Observation) -> float:
    """The Gaussian log-likelihood on the host (NumPy), with its normalisation."""
    x, y = pixel_grid(observation.data.shape, observation.pixel_scale)
    model = sersic_image(np.asarray(params, np.float64), x, y)
    chi = (observation.data - model) / observation.noise_sigma
    return float(-0.5 * np.sum(chi * chi) + _log_norm(observation))


def _log_norm(observation: Observation) -> float:
    return -observation.data.size * math.log(observation.noise_sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------- dependencies


class MissingDependencyError(ImportError):
    """JAX or BlackJAX is not installed; the message says what to install."""


_REQUIRED = (
    ("jax", "jax", "the sampler runs as jitted JAX code"),
    ("blackjax", "blackjax", "the sampler is BlackJAX's NUTS"),
)


def require_sampler() -> None:
    """Import JAX and BlackJAX, or say which package to install."""
    for module, package, why in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingDependencyError(
                f"the demo needs the '{package}' package ({why}), but importing {module} "
                f"failed ({error}). Install it with:  pip install {package}   "
                "(or everything the demo needs:  pip install 'autofit_jaxviz[demo]')"
            ) from error


# --------------------------------------------------------------------------- payload


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


class _FrameSource:
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


# --------------------------------------------------------------------------- renderer


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
        self.log_norm = _log_norm(observation)
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
        phase = "warm-up" if frame.step <= frame.warmup else "sampling"
        fig.suptitle(
            f"Sersic fit, fully jitted NUTS: best fit at step {frame.step:,} of "
            f"{frame.total_steps:,} ({phase}), {frame.elapsed:.1f} s into sampling, "
            f"log L = {frame.log_likelihood:,.2f}\n"
            f"best  {_describe_parameters(params)}\n"
            f"truth {_describe_parameters(self.truth)}",
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
                color="C0", lw=1.5, label="best log L so far (dots: improvements)")
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


# --------------------------------------------------------------------------- progress


class _Progress:
    """The terminal progress line, fed from XLA's callback thread and the renderer.

    Neither caller touches JAX. On a TTY one line is rewritten (``\\r``) at most
    ten times a second; otherwise a plain line is printed at each tenth of the
    run, so logs stay short.
    """

    def __init__(self, total: int, stream: TextIO, worker: QuickUpdateWorker | None,
                 source: _FrameSource | None = None) -> None:
        self.total = total
        self.stream = stream
        self.worker = worker
        self.source = source
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self.steps = 0
        self.best: float | None = None
        self.rendered = 0
        self._last_print = -math.inf
        self._next_decile = 1
        self._width = 0
        self._printed = ""

    def tick(self, step: Any) -> None:
        """From the scan, every ~1% of the steps (a host callback: no JAX here)."""
        with self._lock:
            self.steps = max(self.steps, int(np.asarray(step)))
            decile = self.steps * 10 // max(self.total, 1)
            if self.tty:
                self._refresh()
            elif decile >= self._next_decile:
                self._next_decile = decile + 1
                self._print_line()

    def on_rendered(self, frame: DemoFrame, _result: Any) -> None:
        """From the renderer after each image."""
        with self._lock:
            self.rendered += 1
            if self.best is None or frame.log_likelihood > self.best:
                self.best = frame.log_likelihood
            self.steps = max(self.steps, frame.step)
            if self.tty:
                self._refresh()

    def finish(self) -> None:
        with self._lock:
            if self.tty:
                self._refresh(force=True)
                self.stream.write("\n")
            elif self._printed != self._line():
                self._print_line()
            self.stream.flush()

    def _line(self) -> str:
        latest = None if self.source is None else self.source.latest
        if latest is not None and (self.best is None or latest.log_likelihood > self.best):
            self.best = latest.log_likelihood  # the host's best, drawn or not yet
        best = "none yet" if self.best is None else f"{self.best:,.2f}"
        superseded = self.worker.stats.superseded if self.worker is not None else 0
        percent = 100 * self.steps // max(self.total, 1)
        return (
            f"step {self.steps:>{len(str(self.total))}}/{self.total} ({percent:3d}%)  "
            f"best log L {best}  images {self.rendered}  superseded {superseded}"
        )

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < 0.1:
            return
        self._last_print = now
        line = self._line()
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def _print_line(self) -> None:
        self._printed = self._line()
        self.stream.write(self._printed + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------- sampler


def _float_dtype() -> Any:
    """JAX's default float: float32, or float64 when x64 is enabled."""
    import jax.numpy as jnp

    return jnp.asarray(0.0).dtype


def _build_sampler(
    observation: Observation,
    *,
    warmup: int,
    steps: int,
    tracker: Any | None,
    tick: Callable[[Any], None] | None,
) -> Callable[..., Any]:
    """The whole run as one function for ``jax.jit``: one ``lax.scan`` over warm-up + sampling.

    Warm-up is Stan's windowed adaptation (dual averaging of the step size,
    diagonal mass matrix from expanding windows) built from BlackJAX's
    adaptation pieces inside our own scan, because ``blackjax.window_adaptation``
    runs its own scan, which has no room for the tracker: the warm-up is where
    the fit improves most, so that is where the picture must update.
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.adaptation.window_adaptation import build_schedule
    from jax import lax

    total = warmup + steps
    # float32 by default; float64 when the user runs JAX with x64 on, because
    # BlackJAX then builds its adaptation state in float64 and lax.cond needs one dtype
    dtype = _float_dtype()
    x, y = (jnp.asarray(a, dtype)
            for a in pixel_grid(observation.data.shape, observation.pixel_scale))
    data = jnp.asarray(observation.data, dtype)
    inv_sigma = 1.0 / observation.noise_sigma
    log_norm = _log_norm(observation)
    prior_mean, prior_sigma = jnp.asarray(PRIOR_MEAN, dtype), jnp.asarray(PRIOR_SIGMA, dtype)

    def log_like(p: Any) -> Any:
        chi = (data - sersic_image(p, x, y, xp=jnp)) * inv_sigma
        return -0.5 * jnp.sum(chi * chi) + log_norm

    def log_prior(p: Any) -> Any:
        z = (p - prior_mean) / prior_sigma
        return -0.5 * jnp.sum(z * z)

    def log_posterior(p: Any) -> Any:
        return log_like(p) + log_prior(p)

    # (stage, is the end of a slow window) per warm-up step; a dummy row when there is none
    schedule = np.asarray(build_schedule(warmup), np.int32) if warmup else np.zeros((1, 2))
    schedule = schedule.astype(np.int32).reshape(-1, 2)
    kernel = blackjax.nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(0.8)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=True)
    tick_every = max(1, total // _TICKS)

    def adapt(i: Any, stage: Any, window_end: Any, position: Any, acceptance: Any,
              da: Any, mm: Any) -> tuple[Any, Any, Any, Any]:
        da = da_update(da, acceptance)
        mm = lax.cond(stage == 1, lambda m: mm_update(m, position), lambda m: m, mm)
        # end of a slow window: new mass matrix, step size restarts from its average
        da, mm = lax.cond(
            window_end == 1,
            lambda d, m: (da_init(da_final(d)), mm_final(m)),
            lambda d, m: (d, m),
            da, mm,
        )
        step_size = jnp.where(i == warmup - 1, da_final(da), jnp.exp(da.log_step_size))
        return da, mm, step_size.astype(dtype), mm.inverse_mass_matrix.astype(dtype)

    def run(key: Any, start: Any) -> dict[str, Any]:
        state = blackjax.nuts.init(start, log_posterior)
        mm = mm_init(start.shape[0])
        start_ll = state.logdensity - log_prior(start)
        if tracker is not None:
            best = tracker.init(start)
            best = tracker.update(best, start, start_ll)  # step 0: the starting point
        else:
            best = (start_ll, start)
        initial_step_size = jnp.asarray(0.01, dtype)
        carry = (state, da_init(initial_step_size), mm, initial_step_size,
                 mm.inverse_mass_matrix.astype(dtype), best, jnp.int32(0), jnp.int32(0))

        table = jnp.asarray(schedule)

        def one_step(carry: Any, i: Any) -> tuple[Any, None]:
            state, da, mm, step_size, imm, best, grads, divergent = carry
            stage, window_end = table[jnp.minimum(i, table.shape[0] - 1)]
            step_key = jax.random.fold_in(key, i)
            state, info = kernel(step_key, state, log_posterior, step_size, imm)
            da, mm, step_size, imm = lax.cond(
                i < warmup,
                lambda: adapt(i, stage, window_end, state.position, info.acceptance_rate, da, mm),
                lambda: (da, mm, step_size, imm),
            )
            ll = state.logdensity - log_prior(state.position)
            if tracker is not None:
                best = tracker.update(best, state.position, ll)
            else:
                better = ll > best[0]
                best = (jnp.where(better, ll, best[0]), jnp.where(better, state.position, best[1]))
            if tick is not None:
                done = i + 1
                lax.cond(done % tick_every == 0,
                         lambda: jax.debug.callback(tick, done), lambda: None)
            grads = grads + info.num_integration_steps
            divergent = divergent + info.is_divergent.astype(jnp.int32)
            return (state, da, mm, step_size, imm, best, grads, divergent), None

        carry, _ = lax.scan(one_step, carry, jnp.arange(total))
        best, grads, divergent = carry[5:]
        return {"best": best, "gradient_evaluations": grads, "divergences": divergent}

    return run


# --------------------------------------------------------------------------- run


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did; :meth:`summary` is what the command line prints."""

    output: Path
    image: Path | None  # None with visualize=False
    visualize: bool
    backend: str
    steps: int
    warmup: int
    seed: int
    compile_seconds: float
    sampling_seconds: float
    best_log_likelihood: float
    best_parameters: np.ndarray
    best_step: int | None  # None without the tracker (the baseline does not know it)
    truth_log_likelihood: float
    gradient_evaluations: int
    divergences: int
    worker_stats: WorkerStats | None

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def steps_per_second(self) -> float:
        return self.total_steps / self.sampling_seconds if self.sampling_seconds > 0 else math.inf

    @property
    def images_rendered(self) -> int:
        return self.worker_stats.rendered if self.worker_stats is not None else 0

    def summary(self) -> str:
        lines = [
            f"sampler: {self.total_steps:,} NUTS steps ({self.warmup:,} warm-up) in "
            f"{self.sampling_seconds:.1f} s = {self.steps_per_second:,.0f} steps/s, "
            f"{self.gradient_evaluations:,} gradients, {self.divergences} divergent "
            f"(compilation {self.compile_seconds:.1f} s, not counted)",
            f"best log L {self.best_log_likelihood:,.2f}"
            + ("" if self.best_step is None else f" at step {self.best_step:,}")
            + f"; at the truth {self.truth_log_likelihood:,.2f}",
            f"  best  {_describe_parameters(self.best_parameters, ' deg')}",
            f"  truth {_describe_parameters(TRUTH, ' deg')}",
        ]
        if self.visualize and self.worker_stats is not None:
            s = self.worker_stats
            lines.append(
                f"images: {s.rendered} rendered ({self.backend} backend, "
                f"{s.mean_render_seconds:.2f} s each), {s.superseded} superseded, "
                f"{s.failed} failed -> {self.image}"
            )
        else:
            lines.append("no visualisation (--no-viz): this is the baseline speed")
        return "\n".join(lines)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def run_demo(
    output: Path | str = DEFAULT_OUTPUT,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    backend: str = "process",
    seed: int = 0,
    every: int = 1,
    visualize: bool = True,
    on_rendered: Callable[[DemoFrame, Path], None] | None = None,
    progress: bool = False,
    stream: TextIO | None = None,
) -> DemoResult:
    """Simulate the galaxy, sample it with jitted NUTS, keep ``output/fit.png`` up to date.

    Blocks until the sampler is done and the final best fit is drawn. For a
    notebook, ``on_rendered(frame, png_path)`` is called on the renderer
    thread after each image (e.g. to refresh a display); ``progress=True``
    writes the progress line and summary to ``stream`` (default stdout).
    ``every`` is the tracker's ``every``: at most one host call per that many
    steps. ``visualize=False`` is the baseline: the same scan without tracker,
    progress callback or worker.

    Raises :class:`MissingDependencyError` without JAX or BlackJAX and
    ``ValueError`` for bad arguments.
    """
    steps = _check_int("steps", steps, 1)
    warmup = _check_int("warmup", warmup, 0)
    seed = _check_int("seed", seed, 0)
    every = _check_int("every", every, 1)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if on_rendered is not None and not callable(on_rendered):
        raise TypeError(f"on_rendered must be callable or None, got {on_rendered!r}")
    require_sampler()
    import jax

    from autofit_jaxviz.callback import BestFitTracker

    out = sys.stdout if stream is None else stream

    def say(text: str) -> None:
        if progress:
            print(text, file=out, flush=True)

    output = Path(output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    observation = simulate(seed)
    total = warmup + steps
    image = output / IMAGE_NAME if visualize else None

    worker: QuickUpdateWorker | None = None
    meter: _Progress | None = None
    tracker: BestFitTracker | None = None
    source: _FrameSource | None = None
    if image is not None:

        def after_render(frame: DemoFrame, path: Path) -> None:
            if meter is not None:
                meter.on_rendered(frame, path)
            if on_rendered is not None:
                on_rendered(frame, path)

        worker = QuickUpdateWorker(FitRenderer(observation, image),
                                   mode=cast(WorkerMode, backend), name="demo",
                                   on_rendered=after_render)
        source = _FrameSource(worker, total_steps=total, warmup=warmup)
        tracker = BestFitTracker(source, every=every)
        if progress:
            meter = _Progress(total, out, worker, source)

    say(f"simulated a {observation.data.shape[1]}x{observation.data.shape[0]} Sersic galaxy "
        f"(seed {seed}); fitting 7 parameters with NUTS: {warmup:,} warm-up + {steps:,} steps "
        "in one jitted lax.scan")
    if image is not None:
        say(f"live best fit ({backend} backend): {image}")
    else:
        say("--no-viz: no tracker, no progress callback, no images (the baseline)")

    try:
        started = time.perf_counter()
        run = _build_sampler(observation, warmup=warmup, steps=steps, tracker=tracker,
                             tick=None if meter is None else meter.tick)
        key = jax.random.key(seed)
        begin = np.asarray(START, _float_dtype())
        compiled = jax.jit(run).lower(key, begin).compile()
        compile_seconds = time.perf_counter() - started
        say(f"compiled in {compile_seconds:.1f} s; sampling...")

        started = time.perf_counter()
        if source is not None:
            source.started = time.monotonic()
        result = jax.block_until_ready(compiled(key, begin))
        sampling_seconds = time.perf_counter() - started

        best_step: int | None = None
        if tracker is not None:
            jax.effects_barrier()  # every callback of the scan has reached the host
            state = result["best"]
            tracker.report_final(state)  # a concrete state: handed on before it returns
            best_ll = float(state.best_log_likelihood)
            best_params = np.asarray(state.best_parameters)
            best_step = int(state.best_step)
        else:
            best_ll = float(result["best"][0])
            best_params = np.asarray(result["best"][1])
    finally:
        if worker is not None:
            worker.shutdown(timeout=120)  # draws the final best fit first
        if meter is not None:
            meter.finish()

    demo = DemoResult(
        output=output,
        image=image,
        visualize=visualize,
        backend=backend,
        steps=steps,
        warmup=warmup,
        seed=seed,
        compile_seconds=compile_seconds,
        sampling_seconds=sampling_seconds,
        best_log_likelihood=best_ll,
        best_parameters=best_params,
        best_step=best_step,
        truth_log_likelihood=log_likelihood(observation.truth, observation),
        gradient_evaluations=int(result["gradient_evaluations"]),
        divergences=int(result["divergences"]),
        worker_stats=None if worker is None else worker.stats,
    )
    say(demo.summary())
    return demo


# --------------------------------------------------------------------------- command line


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _output_folder(text: str) -> Path:
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder path, got {text!r}")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, but {text!r} is an existing file")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (used by ``python -m autofit_jaxviz demo``)."""
    parser.add_argument(
        "--output", type=_output_folder, default=DEFAULT_OUTPUT, metavar="DIR",
        help=f"folder for the live image {IMAGE_NAME}, created if needed "
             f"(default: ./{DEFAULT_OUTPUT})")
    parser.add_argument(
        "--steps", type=_int_at_least(1, "a positive integer"), default=DEFAULT_STEPS,
        metavar="N", help=f"NUTS steps after warm-up (default: {DEFAULT_STEPS})")
    parser.add_argument(
        "--warmup", type=_int_at_least(0, "an integer >= 0"), default=DEFAULT_WARMUP,
        metavar="N", help="warm-up (step size and mass matrix adaptation) steps, part of the "
                          f"same jitted scan; 0 skips adaptation (default: {DEFAULT_WARMUP})")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="process",
        help="where images are drawn: a spawned render process, a background thread, or "
             "inline in the sampler's host callback (sync, which stalls the sampler) "
             "(default: process)")
    parser.add_argument(
        "--seed", type=_int_at_least(0, "an integer >= 0"), default=0, metavar="N",
        help="seed of the simulated noise and of the sampler (default: 0)")
    parser.add_argument(
        "--every", type=_int_at_least(1, "a positive integer"), default=1, metavar="N",
        help="report an improved best fit to the host at most once per N steps (default: 1)")
    parser.add_argument(
        "--no-viz", dest="visualize", action="store_false",
        help="the baseline: the same sampler with no tracker, no callbacks and no images, "
             "to compare steps/s")


def command(args: argparse.Namespace) -> int:
    """Run the demo for parsed arguments: 0 on success, 1 when a package is missing,
    2 when the output folder cannot be created (a bad ``--output``)."""
    try:
        require_sampler()  # before touching the disk
    except MissingDependencyError as error:
        print(f"autofit-jaxviz demo: {error}", file=sys.stderr)
        return 1
    try:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"autofit-jaxviz demo: error: argument --output: cannot create folder "
              f"{str(args.output)!r}: {error.strerror or error}", file=sys.stderr)
        return 2
    run_demo(
        args.output,
        steps=args.steps,
        warmup=args.warmup,
        backend=args.backend,
        seed=args.seed,
        every=args.every,
        visualize=args.visualize,
        progress=True,
    )
    return 0
