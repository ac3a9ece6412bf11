"""One demo run: simulate, sample, draw; :func:`run_demo` and what it returns."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from autofit_jaxviz.backends import BACKENDS, Backend
from autofit_jaxviz.demo.figure import DemoFrame, FitRenderer, FrameSource
from autofit_jaxviz.demo.model import (
    PARAMETER_NAMES,
    START,
    TRUTH,
    describe_parameters,
    log_likelihood,
    simulate,
)
from autofit_jaxviz.demo.progress import Progress
from autofit_jaxviz.demo.sampler import build_sampler, float_dtype, require_sampler
from autofit_jaxviz.device.lazy_jax import block_until_ready, effects_barrier
from autofit_jaxviz.history import PictureHistory, history_folder
from autofit_jaxviz.host.sink import HostSink
from autofit_jaxviz.render.worker import QuickUpdateWorker, WorkerStats

DEFAULT_STEPS = 3000
DEFAULT_WARMUP = 500
DEFAULT_OUTPUT = Path("demo_output")
IMAGE_NAME = "fit.png"
logger = logging.getLogger(__name__)


class DemoView:
    """What the demo's live NUTS draws through (a :class:`~autofit_jaxviz.live.BestFitView`):
    every best goes through :class:`FrameSource`, which adds the history of bests
    to the frame the renderer draws, instead of a :class:`~autofit_jaxviz.LiveView`."""

    name = "demo"

    def __init__(self, source: FrameSource) -> None:
        self.worker = source  # warm-up bests, until a sampling best has come
        self.sink = HostSink(source, name=self.name)

    def close(self, timeout: float | None = 120.0, *, wait_for: Any = None) -> bool:
        """Wait for the run and every callback it dispatched (one deadline); the
        last best is then with the worker (every sampling improvement is
        reported, none held back), whose shutdown, the caller's, draws it."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        done = block_until_ready(wait_for, left()) if wait_for is not None else True
        done = effects_barrier(left()) and done
        self.sink.flush()
        return done


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
    best_step: int | None  # None for the baseline (no picture to match it with)
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
            f"  best  {describe_parameters(self.best_parameters, ' deg')}",
            f"  truth {describe_parameters(TRUTH, ' deg')}",
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
    history: bool = True,
    viewer_port: int | None = None,
) -> DemoResult:
    """Simulate the galaxy, sample it with jitted NUTS, keep ``output/fit.png`` up to date.

    Blocks until the sampler is done and the final best fit is drawn. For a
    notebook, ``on_rendered(frame, png_path)`` is called on the renderer
    thread after each image (e.g. to refresh a display); ``progress=True``
    writes the progress line and summary to ``stream`` (default stdout).
    ``every`` thins the warm-up's reports to one per that many steps
    (``live_algorithm``'s ``every``). ``visualize=False`` is the baseline:
    plain ``blackjax.nuts`` through the same calls, without progress ticks or
    worker. ``history``: every picture is also kept in
    ``output/fit_history`` (what the live page shows); ``viewer_port``: start
    the live page on ``output`` at that port (0: any free one).

    Raises :class:`MissingDependencyError` without JAX or BlackJAX and
    ``ValueError`` for bad arguments.
    """
    steps = _check_int("steps", steps, 1)
    warmup = _check_int("warmup", warmup, 0)
    seed = _check_int("seed", seed, 0)
    every = _check_int("every", every, 1)
    if every > 1 and (warmup == 0 or not visualize):
        raise ValueError(f"every={every} thins the warm-up's reports to the picture, but this "
                         f"run has {'no warm-up (warmup=0)' if visualize else 'no picture'}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if on_rendered is not None and not callable(on_rendered):
        raise TypeError(f"on_rendered must be callable or None, got {on_rendered!r}")
    require_sampler()
    import jax

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
    meter: Progress | None = None
    view: DemoView | None = None
    pictures: PictureHistory | None = None
    if image is not None:
        pictures = PictureHistory(history_folder(image), name="demo: NUTS on a Sersic galaxy",
                                  names=list(PARAMETER_NAMES)) if history else None
        if viewer_port is not None:
            from autofit_jaxviz.viewer.launch import ensure_viewer

            ensure_viewer(str(output), viewer_port)

        def after_render(frame: DemoFrame, path: Path) -> None:
            if pictures is not None:
                pictures.record(path, frame.best)
            if meter is not None:
                meter.on_rendered(frame, path)
            if on_rendered is not None:
                on_rendered(frame, path)

        worker = QuickUpdateWorker(FitRenderer(observation, image),
                                   backend=cast(Backend, backend), name="demo",
                                   on_rendered=after_render)
        view = DemoView(FrameSource(worker, total_steps=total, warmup=warmup))
        if progress:
            meter = Progress(total, out, worker, view.worker)

    say(f"simulated a {observation.data.shape[1]}x{observation.data.shape[0]} Sersic galaxy "
        f"(seed {seed}); fitting 7 parameters with BlackJAX's NUTS: {warmup:,} warm-up "
        f"(window_adaptation) + {steps:,} steps (run_inference_algorithm), jitted as one")
    if image is not None:
        say(f"live best fit ({backend} backend): {image}")
        if pictures is not None and viewer_port is None:
            say(f"every picture is kept in {pictures.folder}; watch it in a browser with: "
                f"python -m autofit_jaxviz view {output}")
    else:
        say("--no-viz: plain blackjax.nuts, no progress callback, no images (the baseline)")

    try:
        started = time.perf_counter()
        run = build_sampler(observation, warmup=warmup, steps=steps, view=view, every=every,
                            progress=None if meter is None else meter.tick)
        key = jax.random.key(seed)
        begin = np.asarray(START, float_dtype())
        compiled = jax.jit(run).lower(key, begin).compile()
        compile_seconds = time.perf_counter() - started
        say(f"compiled in {compile_seconds:.1f} s; sampling...")

        started = time.perf_counter()
        if view is not None:
            view.worker.started = time.monotonic()
        result = jax.block_until_ready(compiled(key, begin))
        sampling_seconds = time.perf_counter() - started
        if view is not None and not view.close(wait_for=result):
            logger.warning("demo: the run's last callbacks did not arrive within 120 s; "
                           "the last picture may not be the best sample")
    finally:
        if worker is not None:
            worker.shutdown(timeout=120)  # draws the final best fit first
            if pictures is not None:
                error = sys.exc_info()[1]
                pictures.finish("finished" if error is None else "failed",
                                None if error is None else f"{type(error).__name__}: {error}")
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
        best_log_likelihood=float(result["best_log_likelihood"]),
        best_parameters=np.asarray(result["best_parameters"]),
        best_step=None if view is None else int(result["best_step"]),
        truth_log_likelihood=log_likelihood(observation.truth, observation),
        gradient_evaluations=int(result["gradient_evaluations"]),
        divergences=int(result["divergences"]),
        worker_stats=None if worker is None else worker.stats,
    )
    say(demo.summary())
    return demo
