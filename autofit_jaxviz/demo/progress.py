"""The demo's one-line progress meter (a carriage-return line on a terminal)."""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from autofit_jaxviz.render.worker import QuickUpdateWorker

if TYPE_CHECKING:
    from autofit_jaxviz.demo.figure import DemoFrame, FrameSource
    pass


#: Progress ticks from inside the jitted run (the adapter's ``progress``): about this many.
PROGRESS_TICKS = 100

class Progress:
    """The terminal progress line, fed from XLA's callback thread and the renderer.

    Neither caller touches JAX. On a TTY one line is rewritten (``\\r``) at most
    ten times a second; otherwise a plain line is printed at each tenth of the
    run, so logs stay short.
    """

    def __init__(self, total: int, stream: TextIO, worker: QuickUpdateWorker | None,
                 source: FrameSource | None = None) -> None:
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
        """From the jitted run, every ~1% of the steps (a host callback: no JAX here)."""
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
        # the host's newest best, drawn or not yet: the warm-up's, then the samples'
        # (lower at first), as in the picture
        latest = None if self.source is None else self.source.latest
        shown = self.best if latest is None else latest.log_likelihood
        best = "none yet" if shown is None else f"{shown:,.2f}"
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
