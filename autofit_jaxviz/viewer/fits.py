"""Which fits lie under the served folder, and the only files the page may read.

A fit is a history folder (``*_history`` with a ``status.json``). The page
names a fit by its folder's path relative to the served folder and a picture
by its number; :meth:`FitFolders.folder` and :meth:`FitFolders.picture` turn
those into paths only when the result lies below the served folder once every
``..`` and symbolic link is resolved, so nothing else on the machine can be read.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path, PurePosixPath
from typing import Any

from autofit_jaxviz.history import (
    FOLDER_SUFFIX,
    PICTURE_NAME,
    STATUS_NAME,
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


class FitFolders:
    """The fits below ``root``: found by :meth:`scan`, read through safe lookups only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such folder to serve: {root!r}")
        self.host = socket.gethostname()

    def scan(self) -> dict[str, Path]:
        """Every fit below the folder, by id (symbolic links to folders are not followed)."""
        found = {}
        candidates = [self.root] if self.root.name.endswith(FOLDER_SUFFIX) else []
        candidates += [p for p in self.root.rglob(f"*{FOLDER_SUFFIX}") if p.is_dir()]
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
        fit whose process on this machine is gone while it still said running."""
        status = read_status(folder)
        if status is None:
            return None
        state = status.get("state")
        if (state == "running" and status.get("host") == self.host
                and not _process_alive(status.get("pid"))):
            state = "stopped"
        now = time.time()
        end = now if state == "running" else status.get("updated", now)
        return {
            "id": fit_id,
            "name": status.get("name", fit_id),
            "state": state,
            "started": status.get("started"),
            "elapsed": max(0.0, float(end) - float(status.get("run_started", end))),
            "updated": status.get("updated"),
            "pictures": status.get("pictures", 0),
            "latest": status.get("latest"),
            "latest_entry": status.get("latest_entry"),
            "best_log_likelihood": status.get("best_log_likelihood"),
            "parameter_names": status.get("parameter_names"),
            "error": status.get("error"),
            "runs": status.get("runs", 1),
        }

    def index(self, fit_id: Any) -> list[dict[str, Any]] | None:
        folder = self.folder(fit_id)
        return None if folder is None else read_index(folder)
