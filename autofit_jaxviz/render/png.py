"""Pictures on disk: written atomically, so no reader ever sees half of one.

The notebook display, a file browser, a web page or a viewer polling
``fit.png`` all read the file while the renderer may be replacing it.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import uuid
from pathlib import Path
from typing import Any

#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def warm_up_matplotlib() -> bool:
    """Draw and encode one tiny figure with text, so that the first real
    picture does not pay for matplotlib's lazy imports and font loading
    (measured: the first autofit quick update 0.69 s, the next ones 0.15 s).
    Returns ``False`` when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(1, 1), dpi=20)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    FigureCanvasAgg(fig).print_png(io.BytesIO())
    return True


def write_png_atomically(fig_or_bytes: Any, path: str | os.PathLike[str], **savefig: Any) -> Path:
    """Write a PNG so that no reader ever sees half of it; returns the path.

    ``fig_or_bytes`` is PNG bytes or anything with ``savefig`` (a matplotlib
    ``Figure``). It is written to a temporary file beside ``path`` and moved
    over it with ``os.replace``, which is atomic on one file system: the
    notebook display, a file browser or a viewer polling the file see the old
    picture or the new one, never a torn one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 lets the umask decide, as open() would (mkstemp's 0600
    # would hide the picture from colleagues and web servers on a shared folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):  # keep an existing picture's mode
                os.fchmod(f.fileno(), stat.S_IMODE(os.stat(target).st_mode))
            if isinstance(fig_or_bytes, bytes | bytearray | memoryview):
                f.write(fig_or_bytes)
            else:
                fig_or_bytes.savefig(f, format="png", **savefig)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target

