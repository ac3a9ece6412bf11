"""Failures that must never reach the sampler are still never silent.

A render (or a host callback) that fails keeps failing, often thousands of
times in a long fit: the first failure is logged with its traceback, later
ones as one summary line every :data:`FAILURE_LOG_EVERY` failures or
:data:`FAILURE_LOG_SECONDS` seconds, whichever comes first.
"""

from __future__ import annotations

import logging
import threading
import time

#: How many failures pass between two summary lines after the first traceback...
FAILURE_LOG_EVERY = 100
#: ...or how many seconds, whichever comes first.
FAILURE_LOG_SECONDS = 60.0


class FailureLog:
    """Rate-limited logging of one kind of failure (``what``: "quick-update render")."""

    def __init__(self, logger: logging.Logger, name: str, what: str) -> None:
        self._logger = logger
        self._name = name
        self._what = what
        self._lock = threading.Lock()
        self._count = 0
        self._since_log = 0
        self._last_log = float("-inf")

    def record(self, error: BaseException) -> None:
        """Count ``error``; log it if it is the first or a summary is due."""
        now = time.monotonic()
        with self._lock:
            self._count += 1
            self._since_log += 1
            first = self._count == 1
            due = (self._since_log >= FAILURE_LOG_EVERY
                   or now - self._last_log >= FAILURE_LOG_SECONDS)
            count = self._since_log
            if first or due:
                self._since_log = 0
                self._last_log = now
        if first:
            self._logger.error("%s: a %s failed; the sampler carries on. Further failures "
                               "are summarised.", self._name, self._what, exc_info=error)
        elif due:
            self._logger.error("%s: %d more %ss failed (latest: %s: %s)", self._name, count,
                               self._what, type(error).__name__, error)
