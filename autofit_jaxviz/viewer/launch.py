"""The page started by a fit (``viewer: true``): once per process, in its own process.

A separate interpreter, so that serving the page never takes the sampler's
GIL; its own session, so that Ctrl-C in the fit's terminal stops the fit, not
the page mid-answer; and it ends when the process that started it is gone.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

#: The page this process started, if any (one per process, whatever the fits).
_started: dict[str, Any] = {}
_lock = threading.Lock()
#: Seconds to wait for the page to say where it listens.
START_TIMEOUT = 30.0


def ensure_viewer(root: str, port: int) -> subprocess.Popen[str] | None:
    """Start ``python -m autofit_jaxviz view root --port port`` unless this
    process already did; its address is printed once, when it listens. Never
    raises: a fit goes on without its page (the reason is logged)."""
    import os
    from pathlib import Path

    with _lock:
        if "process" in _started:
            return _started["process"]
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            process = subprocess.Popen(
                [sys.executable, "-m", "autofit_jaxviz", "view", root, "--port", str(port),
                 "--parent-pid", str(os.getpid())],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
        except OSError as error:
            logger.warning("autofit_jaxviz: the live page could not be started: %s", error)
            return None
        _started["process"] = process
    threading.Thread(target=_announce, args=(process,), name="jaxviz-viewer-address",
                     daemon=True).start()
    return process


def _announce(process: subprocess.Popen[str]) -> None:
    """Print the page's address once (or why it stopped), then drain its output."""
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        if " at http" in line:
            url = line.rsplit(" at ", 1)[1].strip()
            port = urlsplit(url).port
            print(f"autofit_jaxviz: live page at {url}  (from another machine: "
                  f"ssh -N -L {port}:127.0.0.1:{port} {socket.gethostname()}, then open "
                  f"http://127.0.0.1:{port}/ there)", flush=True)
            _started["url"] = url
            break
        lines.append(line.rstrip())
    else:
        logger.warning("autofit_jaxviz: the live page stopped at start (exit code %s): %s",
                       process.wait(), " ".join(lines) or "no output")
        return
    for _ in process.stdout:  # keep its pipe from filling up
        pass


def started_url() -> str | None:
    """The address of the page this process started, once it listens."""
    return _started.get("url")
