"""Renderers that the kernel tests' notebook cells import (this folder is on the
kernel's ``PYTHONPATH``).

They are slowed down only by events that a later cell sets, never by sleeping,
so what each cell sees is decided by the notebook, not by the machine's speed.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.png import write_png_atomically

#: The line the renderer logs for each held step; the test looks for it on iopub.
LOG_MARKER = "render-log-marker"


def fit_logger() -> logging.Logger:
    """A logger that writes to the kernel's stderr, as a user's logging set-up would."""
    log = logging.getLogger("kernel_helpers.fit")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class GatedRender:
    """Draws a best fit with ``Figure`` + Agg (no pyplot) and returns the PNG's path.

    Steps ``>= hold_from`` set ``started`` and wait for ``gate`` before drawing,
    then log :data:`LOG_MARKER`. Each render writes ``fit.png`` (the file the
    display shows, replaced atomically) and a copy ``step_<n>.png``.
    """

    def __init__(self, out_dir: str | Path, *, hold_from: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.hold_from = hold_from
        self.started = threading.Event()
        self.gate = threading.Event()
        self.steps: list[int] = []

    def __call__(self, best: BestFit) -> Path:
        held = self.hold_from is not None and best.step >= self.hold_from
        if held:
            self.started.set()
            if not self.gate.wait(60):
                raise RuntimeError("the notebook never opened the gate")
        fig = Figure(figsize=(3, 2), dpi=50)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(best.parameters, marker="o")
        ax.set_title(f"step {best.step}: {best.log_likelihood:.1f}")
        png = self.out_dir / "fit.png"
        write_png_atomically(fig, png)
        write_png_atomically(png.read_bytes(), self.out_dir / f"step_{best.step}.png")
        self.steps.append(best.step)
        if held:
            fit_logger().warning("%s step %d", LOG_MARKER, best.step)
        return png


class PyplotVisualizer:
    """A user's visualizer in autofit's style: ``plt.figure/plot/savefig/clf/close``.

    For steps ``>= hold_from`` it keeps its figure open and waits for ``gate``
    (after setting ``opened``) before saving, so a cell can finish while the
    figure is registered. ``survived`` records, per step, whether the figure it
    opened was still pyplot's current figure when it saved (the inline backend
    closing it underneath makes ``savefig`` draw a fresh, empty one).
    """

    def __init__(self, out_dir: str | Path, *, hold_from: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.hold_from = hold_from
        self.opened = threading.Event()
        self.gate = threading.Event()
        self.survived: dict[int, bool] = {}
        self.figures: list[weakref.ref] = []

    def __call__(self, best: BestFit) -> Path:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(3, 2), dpi=50)
        self.figures.append(weakref.ref(fig))
        plt.plot(best.parameters, marker="o")
        plt.title(f"step {best.step}")
        if self.hold_from is not None and best.step >= self.hold_from:
            self.opened.set()
            if not self.gate.wait(60):
                raise RuntimeError("the notebook never opened the gate")
        self.survived[best.step] = plt.gcf() is fig
        path = self.out_dir / f"pyplot_{best.step}.png"
        plt.savefig(path)
        plt.clf()
        plt.close()
        return path


class StepRender:
    """Picklable ``Figure`` + Agg render for ``backend="process"``: the drawing runs
    in the spawned child, the display update in the kernel."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = str(out_dir)

    def __call__(self, best: BestFit) -> str:
        import os

        fig = Figure(figsize=(3, 2), dpi=50)
        FigureCanvasAgg(fig)
        fig.add_subplot().plot(best.parameters, marker="s")
        fig.suptitle(f"step {best.step} (pid {os.getpid()})")
        png = Path(self.out_dir) / "fit.png"
        write_png_atomically(fig, png)
        write_png_atomically(png.read_bytes(), Path(self.out_dir) / f"step_{best.step}.png")
        return str(png)
