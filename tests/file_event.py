"""An event any process can set and wait for, whatever started that process.

A render crosses to its render process by value (cloudpickle), outside
multiprocessing's own spawning, so multiprocessing's events cannot go with it.
This one is a file that exists once the event is set: it pickles as its path.
``wait`` checks it every few milliseconds until it is set or the timeout
passes, so a test waits for the thing itself, never for a guessed time.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

_POLL = 0.002


class FileEvent:
    def __init__(self, near: str | os.PathLike[str] | None = None) -> None:
        """``near``: a file whose folder holds the event (a test's ``tmp_path``)."""
        folder = os.path.dirname(os.fspath(near)) if near is not None else tempfile.gettempdir()
        self.path = os.path.join(folder, f".event-{uuid.uuid4().hex}")

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not os.path.exists(self.path):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True
