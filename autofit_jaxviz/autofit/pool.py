"""Forked multi-core pools: every child's best reaches the parent, which draws the global best.

autofit's ``number_of_cores > 1`` forks worker processes that evaluate the
likelihood; only the parent owns the worker. The children are the sampler, so
they must never wait for the parent: each message is one ``os.write`` of at
most ``PIPE_BUF`` bytes to a non-blocking pipe, which POSIX makes atomic (no
lock shared across processes, so a child killed mid-write cannot leave one
held, and messages of two children never interleave). When the pipe is full
because the parent's listener fell behind, the message is dropped: a best fit
is superseded by the next one anyway, and the picture left at the end is the
result's maximum-likelihood sample (see ``Hub.draw_result``), not whatever the
pipe carried. The parent's listener thread keeps the best of all children and
is stopped by an event, with whatever the children had written read first.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import struct
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: One message: kind (b"b" best, b"d" due), step, log-likelihood, then the vector.
_HEADER = struct.Struct("<HcqdI")  # frame length, kind, step, log-likelihood, vector length
#: Writes up to this size are atomic on a pipe (POSIX guarantees at least 512).
_ATOMIC = getattr(select, "PIPE_BUF", 512)


class PoolForwarder:
    """The children's side sends; the parent's listener keeps ``best`` and reports dues."""

    def __init__(self, name: str, on_due: Callable[[int], None]) -> None:
        self.name = name
        self._on_due = on_due
        self._lock = threading.Lock()
        self._best: tuple[float, list[float]] | None = None
        self.dropped = 0  # messages a child could not write (pipe full, too large)
        self.bad = 0  # frames the listener could not read
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # shared with every forked child
        self._wake_read, self._wake_write = os.pipe()
        self._stop = threading.Event()
        self.listener = threading.Thread(target=self._listen, name=f"{name}-children",
                                         daemon=True)
        self.listener.start()

    @property
    def best(self) -> tuple[float, list[float]] | None:
        """The best (log-likelihood, vector) any child reported, or ``None``."""
        with self._lock:
            return self._best

    # in a child: never blocks, never raises -----------------------------------
    def send_best(self, log_likelihood: float, vector: Any) -> None:
        self._send(b"b", 0, float(log_likelihood), np.asarray(vector, dtype="<f8").ravel())

    def send_due(self, step: int) -> None:
        self._send(b"d", int(step), 0.0, np.empty(0, "<f8"))

    def _send(self, kind: bytes, step: int, log_likelihood: float, vector: np.ndarray) -> None:
        body = vector.tobytes()
        size = _HEADER.size + len(body)
        if size > _ATOMIC:  # too many parameters for one atomic write: not forwarded
            self.dropped += 1
            if self.dropped == 1:  # said once, in the child (its log reaches the same stream)
                logger.warning("%s: a pool child's best fit (%d parameters) is too large to "
                               "forward; the parent draws its own best and the result's",
                               self.name, vector.size)
            return
        frame = _HEADER.pack(size, kind, step, log_likelihood, vector.size) + body
        try:
            os.write(self._write, frame)
        except (BlockingIOError, BrokenPipeError, OSError):
            self.dropped += 1  # the parent is behind (or gone): the sampler goes on

    # in the parent ------------------------------------------------------------
    def close(self, timeout: float) -> None:
        """Stop the listener, after it has read what the children already wrote."""
        self._stop.set()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        self.listener.join(timeout)
        if not self.listener.is_alive():
            for fd in (self._read, self._write, self._wake_read, self._wake_write):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _listen(self) -> None:
        pending = b""
        selector = selectors.DefaultSelector()  # poll/epoll: no limit on fd numbers
        selector.register(self._read, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            self._loop(selector, pending)
        finally:
            selector.close()

    def _loop(self, selector: selectors.BaseSelector, pending: bytes) -> None:
        while True:
            try:
                ready = {key.fd for key, _ in selector.select()}
                if self._read in ready:
                    pending = self._consume(pending + os.read(self._read, 1 << 16))
                elif self._stop.is_set():
                    self._drain(pending)
                    return
            except Exception:  # noqa: BLE001 - the listener must outlive any one message
                self.bad += 1
                pending = b""
                logger.debug("%s: a child's message could not be read", self.name,
                             exc_info=True)
                if self._stop.is_set():
                    return

    def _drain(self, pending: bytes) -> None:
        os.set_blocking(self._read, False)
        while True:
            try:
                data = os.read(self._read, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            pending = self._consume(pending + data)

    def _consume(self, data: bytes) -> bytes:
        """Handle every whole frame in ``data``; return the incomplete rest."""
        while len(data) >= _HEADER.size:
            size, kind, step, log_likelihood, count = _HEADER.unpack_from(data)
            if size != _HEADER.size + 8 * count:
                raise ValueError(f"corrupt frame from a child: size {size}, {count} values")
            if len(data) < size:
                break
            frame, data = data[:size], data[size:]
            try:
                self._handle(kind, step, log_likelihood, frame[_HEADER.size:])
            except Exception:  # noqa: BLE001 - one bad message never stops the listener
                self.bad += 1
                logger.exception("%s: a child's quick update could not be submitted",
                                 self.name)
        return data

    def _handle(self, kind: bytes, step: int, log_likelihood: float, body: bytes) -> None:
        if kind == b"b":
            vector = np.frombuffer(body, dtype="<f8").tolist()
            with self._lock:
                if self._best is None or log_likelihood > self._best[0]:
                    self._best = (log_likelihood, vector)
        elif kind == b"d" and self.best is not None:
            self._on_due(step)
