"""Forked multi-core pools: every child's best reaches the parent, which draws the global best.

autofit's ``number_of_cores > 1`` forks worker processes that evaluate the
likelihood; only the parent owns the worker. Each child sends its
improvements (and "a quick update is due") through a fork-inherited queue; a
listener thread in the parent keeps the best of all children.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class PoolForwarder:
    """The children's side sends; the parent's listener keeps ``best`` and reports dues."""

    def __init__(self, name: str, on_due: Callable[[int], None]) -> None:
        self.name = name
        self._on_due = on_due
        self._lock = threading.Lock()
        self._best: tuple[float, list[float]] | None = None
        self.channel = multiprocessing.get_context("fork").SimpleQueue()
        self.listener = threading.Thread(target=self._listen, name=f"{name}-children",
                                         daemon=True)
        self.listener.start()

    @property
    def best(self) -> tuple[float, list[float]] | None:
        """The best (log-likelihood, vector) any child reported, or ``None``."""
        with self._lock:
            return self._best

    # in a child -------------------------------------------------------------
    def send_best(self, log_likelihood: float, vector: Any) -> None:
        self.channel.put(("best", float(log_likelihood), np.asarray(vector, dtype=float).tolist()))

    def send_due(self, step: int) -> None:
        self.channel.put(("due", step))

    # in the parent ----------------------------------------------------------
    def close(self, timeout: float) -> None:
        """Stop the listener (after what the children already sent)."""
        self.channel.put(None)
        self.listener.join(timeout)

    def _listen(self) -> None:
        channel = self.channel
        while True:
            message = channel.get()
            if message is None:
                return
            try:
                if message[0] == "best":
                    _, log_likelihood, vector = message
                    with self._lock:
                        if self._best is None or log_likelihood > self._best[0]:
                            self._best = (log_likelihood, vector)
                elif message[0] == "due" and self.best is not None:
                    self._on_due(message[1])
            except Exception:  # pragma: no cover - never let the listener die
                logger.exception("%s: a child's quick update could not be submitted", self.name)
