"""Every finished picture kept beside ``fit.png``, with an index a viewer can read.

A fit that runs for hours converges through hundreds of pictures; ``fit.png``
shows only the newest. The history folder (``fit_history/`` beside
``fit.png``) keeps each picture under its number with one index line per
picture (wall time, step, log-likelihood, parameters) and a small status file
(running / finished / failed, who runs it), so the live page
(``python -m autofit_jaxviz view``) can list fits, scrub through a fit's
pictures and export them as an animation.

Everything is written atomically (a temporary file moved into place), so a
reader sees the old index or the new one, never half of one, and the index
never names a picture that is not yet on disk. Disk use is bounded by the
retention rule of :func:`autofit_jaxviz.retention.kept`: the newest ``keep_recent`` pictures plus
geometrically spaced older ones, so a fit of 1,000 pictures keeps under a
hundred and its early pictures survive. A resumed fit (same output folder)
continues the numbering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.png import PNG_SIGNATURE, write_png_atomically
from autofit_jaxviz.retention import Retention, kept

logger = logging.getLogger(__name__)

#: The history of ``fit.png`` lives in ``fit_history/`` beside it.
FOLDER_SUFFIX = "_history"
INDEX_NAME = "index.jsonl"
LOCK_NAME = ".writer.lock"
STATUS_NAME = "status.json"
#: Picture files are named by number only: a viewer serves nothing else.
PICTURE_NAME = re.compile(r"^(\d{6,})\.png$")
#: Parameter arrays larger than this are not written into the index.
MAX_PARAMETERS = 1000
#: The states a fit's status can be in (``stopped``: its process is gone).
STATES = ("running", "finished", "failed", "stopped")


def history_folder(image: str | os.PathLike[str]) -> Path:
    """Where the history of the picture ``image`` is kept (``fit.png`` -> ``fit_history``)."""
    path = Path(image)
    return path.parent / f"{path.stem}{FOLDER_SUFFIX}"


def picture_name(number: int) -> str:
    return f"{number:06d}.png"


def _write_atomically(path: Path, text: str) -> None:
    # the pictures' own atomic write: temporary file beside it, mode kept, os.replace
    write_png_atomically(text.encode("utf-8"), path)


def _strict_json(text: str) -> Any:
    """JSON as a browser reads it: ``NaN`` and ``Infinity`` are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):  # 1e400
            raise ValueError(f"{text} is not a finite number")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=finite)


def _index_text(folder: str | os.PathLike[str]) -> str:
    return (Path(folder) / INDEX_NAME).read_text(encoding="utf-8", errors="replace")


def _parse_index(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        try:
            entry = _strict_json(line)
        except (ValueError, RecursionError):
            continue
        if (isinstance(entry, dict) and type(entry.get("n")) is int
                and entry.get("file") == picture_name(entry["n"])):
            entries.append(entry)
    return entries


def read_index(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The index of a history folder, oldest first; ``[]`` if there is none.
    A line that cannot be read (a disk that filled up, a NaN) is skipped, not fatal."""
    try:
        return _parse_index(_index_text(folder))
    except OSError:  # none yet, or unreadable: no history to show
        return []


def read_status(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status of a history folder, or ``None`` if it has none (yet)."""
    try:
        status = _strict_json((Path(folder) / STATUS_NAME).read_text(encoding="utf-8",
                                                                     errors="replace"))
    except (OSError, ValueError, RecursionError):  # none, unreadable, torn, or odd
        return None
    return status if isinstance(status, dict) else None


def number_or_none(value: Any) -> float | None:
    """A finite number from a file someone else may have written, else ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf or nan


class _Lock:
    """A held ``flock`` (or none, where the file system has no locks).

    Unlocked explicitly, by the process that took it only: a forked child
    (an autofit pool worker) holds a copy of the descriptor, so closing it in
    the parent would not free the lock, and unlocking it in the child would
    free the parent's."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.pid = os.getpid()

    def release(self) -> None:
        if self.file is None:
            return
        if os.getpid() == self.pid:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


class PictureHistory:
    """One fit's history folder: :meth:`record` each finished picture, :meth:`finish` at the end.

    ``name`` is what the live page calls the fit (a search name); ``names``
    the parameter names, if known. Recording never raises into the caller (a
    full disk is logged once per kind of failure): a fit must not stop because
    its history could not be written.
    """

    def __init__(self, folder: str | os.PathLike[str], *, name: str,
                 retention: Retention | None = None,
                 names: list[str] | None = None) -> None:
        self.folder = Path(folder)
        self.retention = retention or Retention()
        self.lock = threading.Lock()
        self._failures: set[str] = set()
        now = time.time()
        self._lock_file = self._guarded("lock", self._take_lock)
        self.enabled = self._lock_file is not None
        # a resumed fit continues its history; anything unreadable starts afresh
        self.entries = []
        index_readable = True
        try:
            self.entries = _parse_index(_index_text(self.folder))
        except FileNotFoundError:
            pass
        except OSError:
            index_readable = False  # not "no index": keep every picture on disk
        previous = (read_status(self.folder) or {}) if self.enabled else {}
        self._next = max((e["n"] for e in self.entries), default=0) + 1
        if self.enabled:
            self._next = self._guarded("resume", self._clean_up, index_readable) or self._next
        runs = previous.get("runs")
        self.status: dict[str, Any] = {
            "format": 1,
            "name": name,
            "state": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": number_or_none(previous.get("started")) or now,
            "run_started": now,
            "runs": (runs if type(runs) is int and runs > 0 else 0) + 1,
            "updated": now,
            "pictures": len(self.entries),
            "latest": self.entries[-1]["n"] if self.entries else None,
            "latest_entry": _summary_entry(self.entries[-1]) if self.entries else None,
            "best_log_likelihood": number_or_none(previous.get("best_log_likelihood")),
            "parameter_names": names if names is not None else _names(
                previous.get("parameter_names")),
            "error": None,
        }
        if self.enabled:
            self._guarded("start", self._write_status)

    def _take_lock(self) -> Any:
        """One writer per history folder: a second fit writing to the same output
        folder at the same time would delete and renumber the first's pictures.
        The lock (``flock``) goes with the process, also when it is killed. On a
        file system without ``flock`` (Lustre without the mount option, some
        NFS) the history is written without one, saying so once."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX
            return self._unlocked("this platform has no fcntl.flock")
        lock = open(self.folder / LOCK_NAME, "a")  # noqa: SIM115 - held for the history's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            if "busy" not in self._failures:
                self._failures.add("busy")
                logger.warning("another writer (a process, or a live view not yet closed) "
                               "holds the picture history in %s; this one keeps none (its "
                               "fit.png is still drawn)", self.folder)
            return None
        except OSError as error:
            lock.close()
            return self._unlocked(f"the file system refuses flock ({error})")
        return _Lock(lock)

    def _unlocked(self, why: str) -> _Lock:
        if "unlocked" not in self._failures:
            self._failures.add("unlocked")
            logger.warning("the picture history in %s is written without a lock, because %s: "
                           "two fits on this output folder at once would mix their pictures",
                           self.folder, why)
        return _Lock(None)

    def _retake_lock(self) -> bool:
        """After :meth:`finish`: take the folder back for the result's picture,
        unless another fit has written it since (its numbers and index would be
        overwritten with this one's)."""
        self._lock_file = self._guarded("lock", self._take_lock)
        if self._lock_file is None:
            return False
        on_disk = read_status(self.folder) or {}
        if (on_disk.get("pid") != self.status["pid"]
                or on_disk.get("run_started") != self.status["run_started"]):
            self._release()
            return False
        return True

    def _clean_up(self, index_readable: bool) -> int:
        """On start: the next free number (past every picture on disk, listed or
        not, so a lost index never reuses a number a browser has cached), and
        pictures no index names (a kill between the index and the deletions)
        and temporary files of killed writes removed, but only when the index
        could be read (one that exists and cannot be read deletes nothing)."""
        listed = {e["file"] for e in self.entries}
        highest = max((e["n"] for e in self.entries), default=0)
        for path in self.folder.iterdir():
            match = PICTURE_NAME.match(path.name)
            if match:
                highest = max(highest, int(match.group(1)))
                if index_readable and path.name not in listed:
                    path.unlink(missing_ok=True)
            elif index_readable and path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        return highest + 1

    def record(self, picture: Any, best: BestFit, *, final: bool = False) -> int | None:
        """Keep a copy of the picture just drawn for ``best`` (its path, or PNG
        bytes); returns its number (``None`` when there was no picture or it
        could not be kept)."""
        if not self.enabled or not isinstance(picture, str | os.PathLike | bytes | bytearray):
            return None  # another writer has the folder; or no picture (only model.results)
        with self.lock:
            if not self._guarded("read", _is_png, picture):
                if "not a png" not in self._failures:
                    self._failures.add("not a png")
                    logger.info("%s is not a PNG picture: the history keeps only PNGs (the "
                                "page shows them), so it is not kept", _describe(picture))
                return None
            if self._lock_file is None:  # after finish: the result's picture, one more
                if not self._retake_lock():
                    return None
                try:
                    return self._guarded("record", self._record, picture, best, final)
                finally:
                    self._release()
            return self._guarded("record", self._record, picture, best, final)

    def finish(self, state: str = "finished", error: str | None = None) -> None:
        """The fit ended (``finished``) or raised (``failed``, with the error named)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        if not self.enabled:
            return
        with self.lock:
            if self._lock_file is None:  # finished before: take the folder back a moment
                if not self._retake_lock():
                    return
            self.status.update(state=state, error=error, updated=time.time())
            self._guarded("finish", self._write_status)
            self._release()  # the next fit on this output folder may write it now

    def _release(self) -> None:
        lock, self._lock_file = self._lock_file, None
        if lock is not None:
            lock.release()

    def _record(self, picture: Any, best: BestFit, final: bool) -> int:
        number = self._next
        name = picture_name(number)
        # a copy of the bytes: fit.png is replaced by the next picture
        data = picture if isinstance(picture, bytes | bytearray) else Path(picture).read_bytes()
        write_png_atomically(bytes(data), self.folder / name)
        self._next = number + 1  # never reused, even if the index cannot be written
        now = time.time()
        log_likelihood = float(best.log_likelihood)
        entries = [*self.entries, {
            "n": number,
            "file": name,
            "time": now,
            "elapsed": now - self.status["started"],
            "step": int(best.step),
            "log_likelihood": _finite(log_likelihood),
            "parameters": _flat_list(best.parameters),
            "final": final,
        }]
        keep = set(kept((e["n"] for e in entries), keep_recent=self.retention.keep_recent,
                        keep_ratio=self.retention.keep_ratio))
        dropped = [e for e in entries if e["n"] not in keep]
        entries = [e for e in entries if e["n"] in keep]
        # the index first: it never names a picture that is gone
        try:
            _write_atomically(self.folder / INDEX_NAME,
                              "".join(json.dumps(e, allow_nan=False) + "\n" for e in entries))
        except BaseException:
            (self.folder / name).unlink(missing_ok=True)  # no index line: no picture either
            raise
        self.entries = entries  # only once the index on disk says so
        for entry in dropped:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / entry["file"]).unlink()
        best_so_far = self.status["best_log_likelihood"]
        if math.isfinite(log_likelihood) and (best_so_far is None or log_likelihood > best_so_far):
            self.status["best_log_likelihood"] = log_likelihood
        # the newest index line rides along in the status: a page that has the
        # rest appends it without reading the whole index again
        self.status.update(updated=now, pictures=len(self.entries), latest=number,
                           latest_entry=_summary_entry(self.entries[-1]))
        self._write_status()
        return number

    def _write_status(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.folder / STATUS_NAME, json.dumps(self.status, allow_nan=False))

    def _guarded(self, what: str, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except Exception as error:  # noqa: BLE001 - the fit goes on without its history
            if what not in self._failures:
                self._failures.add(what)
                logger.warning("the picture history in %s could not be written (%s: %s); "
                               "the fit goes on", self.folder, type(error).__name__, error)
            return None

    def __repr__(self) -> str:
        return f"PictureHistory({str(self.folder)!r}, pictures={len(self.entries)})"


#: Parameters longer than this (as JSON) stay out of the status every push carries.
SUMMARY_PARAMETERS_CHARS = 2000


def _summary_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The newest index line as every push to the page carries it: with its
    parameters only when they are few (a grid of fits must not push megabytes)."""
    if len(json.dumps(entry.get("parameters"))) <= SUMMARY_PARAMETERS_CHARS:
        return dict(entry)
    return {k: v for k, v in entry.items() if k != "parameters"}


def _names(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _is_png(picture: Any) -> bool:
    if isinstance(picture, bytes | bytearray):
        return bytes(picture[:8]) == PNG_SIGNATURE
    with open(picture, "rb") as f:
        return f.read(8) == PNG_SIGNATURE


def _describe(picture: Any) -> str:
    return f"{len(picture)} bytes" if isinstance(picture, bytes | bytearray) else str(picture)


def _flat_list(parameters: Any) -> list[float] | dict[str, Any] | None:
    """The parameters as JSON: a flat vector as a list, a pytree (a dict of
    named arrays, as NumPyro names them) as a dict of lists."""
    import numpy as np

    if isinstance(parameters, dict):
        return {str(k): _flat_list(v) for k, v in parameters.items()}
    try:
        array = np.asarray(parameters, dtype=float)
    except (TypeError, ValueError):
        return None
    if array.size > MAX_PARAMETERS:
        return None  # a pixelised source or a neural network: not an index line
    return [v if math.isfinite(v) else None for v in array.ravel().tolist()]
