"""Which fits lie under the served folder, and the only files the page may read.

A fit is a history folder (``*_history`` with a ``status.json``). The page
names a fit by its folder's path relative to the served folder and a picture
by its number; :meth:`FitFolders.folder` and :meth:`FitFolders.picture` turn
those into paths only when the result lies below the served folder once every
``..`` and symbolic link is resolved, so nothing else on the machine can be read.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path, PurePosixPath
from typing import Any

from autofit_jaxviz.history import (
    FOLDER_SUFFIX,
    PICTURE_NAME,
    STATES,
    STATUS_NAME,
    SUMMARY_PARAMETERS_CHARS,
    number_or_none,
    picture_name,
    read_index,
    read_status,
)


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _text(value: Any) -> str | None:
    return value[:500] if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _latest(raw: Any) -> dict[str, Any] | None:
    entry = _entry(raw) if isinstance(raw, dict) else None
    if entry is not None:
        parameters = _json_safe(raw.get("parameters"))
        if len(json.dumps(parameters)) <= SUMMARY_PARAMETERS_CHARS:
            entry["parameters"] = parameters
    return entry


def _json_safe(value: Any) -> Any:
    """``value`` if strict JSON can carry it (browsers reject NaN), else ``None``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def _entry(entry: dict[str, Any]) -> dict[str, Any] | None:
    """An index line as the page reads it, or ``None`` if it is not one."""
    n = entry.get("n")
    if type(n) is not int or entry.get("file") != picture_name(n):
        return None
    return {
        "n": n,
        "file": entry["file"],
        "time": number_or_none(entry.get("time")),
        "elapsed": number_or_none(entry.get("elapsed")),
        "step": entry.get("step") if type(entry.get("step")) is int else None,
        "log_likelihood": number_or_none(entry.get("log_likelihood")),
        "final": entry.get("final") is True,
    }


class FitFolders:
    """The fits below ``root``: found by :meth:`scan`, read through safe lookups only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such folder to serve: {root!r}")
        self.host = socket.gethostname()

    def scan(self, under: str | os.PathLike[str] | None = None) -> dict[str, Path]:
        """Every fit below the folder (or below ``under``, a folder inside it), by
        id; symbolic links to folders are not followed."""
        found: dict[str, Path] = {}
        top = self.root if under is None else Path(under)
        if top.is_symlink() or not top.is_dir():
            return found
        candidates = [top] if top.name.endswith(FOLDER_SUFFIX) else []
        candidates += [p for p in top.rglob(f"*{FOLDER_SUFFIX}")
                       if p.is_dir() and not p.is_symlink()]
        for folder in candidates:
            if (folder / STATUS_NAME).is_file():
                fit_id = self.fit_id(folder)
                if fit_id is not None:
                    found[fit_id] = folder
        return found

    def fit_id(self, folder: str | os.PathLike[str]) -> str | None:
        """The id of a history folder (its path below the root), or ``None`` if it is not one."""
        path = Path(folder)
        if not path.name.endswith(FOLDER_SUFFIX):
            return None
        try:
            relative = path.resolve().relative_to(self.root)
        except ValueError:
            return None
        return relative.as_posix()

    def folder(self, fit_id: Any) -> Path | None:
        """The history folder of ``fit_id``, or ``None`` for anything that is not
        a fit below the root (``..``, an absolute path, a link out, a plain folder)."""
        if not isinstance(fit_id, str) or not fit_id or "\\" in fit_id or "\0" in fit_id:
            return None
        relative = PurePosixPath(fit_id)
        if relative.is_absolute() or ".." in relative.parts:
            return None
        candidate = (self.root / relative).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None
        if not candidate.name.endswith(FOLDER_SUFFIX) or not (candidate / STATUS_NAME).is_file():
            return None
        return candidate

    def picture(self, fit_id: Any, name: Any) -> Path | None:
        """A picture of a fit, by its file name (``000012.png``); ``None`` unless
        it is a numbered picture lying in that fit's own history folder."""
        folder = self.folder(fit_id)
        if folder is None or not isinstance(name, str) or not PICTURE_NAME.match(name):
            return None
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            return None
        return path

    def summary(self, fit_id: str, folder: Path) -> dict[str, Any] | None:
        """What the page lists for one fit: its status, with ``stopped`` for a
        fit whose process on this machine is gone while it still said running.
        Every value is checked (a status file may come from anyone): what is
        not of the expected type is left out, so one odd file never breaks the page."""
        status = read_status(folder)
        if status is None:
            return None
        state = status.get("state")
        if state not in STATES:
            state = "stopped"
        if (state == "running" and status.get("host") == self.host
                and not _process_alive(status.get("pid"))):
            state = "stopped"
        now = time.time()
        updated = number_or_none(status.get("updated"))
        run_started = number_or_none(status.get("run_started"))
        end = now if state == "running" else (updated or now)
        latest_entry = status.get("latest_entry")
        return {
            "id": fit_id,
            "name": _text(status.get("name")) or fit_id,
            "state": state,
            "started": number_or_none(status.get("started")),
            "elapsed": (number_or_none(max(0.0, end - run_started))
                        if run_started is not None else None),
            "updated": updated,
            "pictures": _count(status.get("pictures")),
            "latest": _count(status.get("latest")),
            "latest_entry": _latest(latest_entry),
            "best_log_likelihood": number_or_none(status.get("best_log_likelihood")),
            "error": _text(status.get("error")),
            "runs": _count(status.get("runs")),
        }

    def parameter_names(self, fit_id: Any) -> list[str] | None:
        folder = self.folder(fit_id)
        names = None if folder is None else (read_status(folder) or {}).get("parameter_names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
        return None

    def index(self, fit_id: Any) -> list[dict[str, Any]] | None:
        """A fit's index lines as the page reads them (parameters included)."""
        folder = self.folder(fit_id)
        if folder is None:
            return None
        entries = []
        for raw in read_index(folder):
            entry = _entry(raw)
            if entry is not None:
                entry["parameters"] = _json_safe(raw.get("parameters"))
                entries.append(entry)
        return entries
