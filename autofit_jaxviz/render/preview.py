"""Quick updates drawn at a preview resolution, whatever dpi the visualizer asks for.

A quick update is looked at while the fit runs, and is replaced by the next
one: drawing it at a visualizer's full resolution (autogalaxy writes ``fit.png``
at 300 dpi, with ``bbox_inches="tight"``, which draws the figure twice) costs
the fit a core for most of a second per picture. Within :func:`preview_dpi`,
every figure saved *on that thread* is saved at no more than the preview dpi,
whether the visualizer passed ``dpi=`` explicitly or relied on
``rcParams["savefig.dpi"]``, and without ``bbox_inches="tight"`` (a second
draw of the whole figure, only to measure it). matplotlib has no public hook for an explicit
``dpi=``, so ``FigureCanvasBase.print_figure`` is wrapped, once, by a function
that does nothing outside such a block: autofit's own end-of-fit visuals, and
every other thread, keep their full resolution.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

_active = threading.local()
_install_lock = threading.Lock()


def _cap(dpi: Any, figure: Any) -> Any:
    import matplotlib

    cap = getattr(_active, "dpi", None)
    if not cap:
        return dpi
    wanted = dpi if dpi is not None else matplotlib.rcParams["savefig.dpi"]
    if wanted == "figure":
        wanted = figure.dpi
    try:
        return min(float(wanted), cap)
    except (TypeError, ValueError):  # something matplotlib itself will reject
        return dpi


def _install() -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    with _install_lock:
        original = FigureCanvasBase.print_figure
        if getattr(original, "_autofit_jaxviz_preview", False):
            return

        @functools.wraps(original)
        def print_figure(canvas: Any, filename: Any, dpi: Any = None, *args: Any,
                         **kwargs: Any) -> Any:
            if getattr(_active, "dpi", None) and kwargs.get("bbox_inches") == "tight":
                # "tight" draws the whole figure once more to measure it: in a
                # preview, the layout the figure already has is kept
                kwargs["bbox_inches"] = None
            return original(canvas, filename, _cap(dpi, canvas.figure), *args, **kwargs)

        print_figure._autofit_jaxviz_preview = True  # type: ignore[attr-defined]
        FigureCanvasBase.print_figure = print_figure  # type: ignore[method-assign]


@contextlib.contextmanager
def preview_dpi(dpi: float | None) -> Iterator[None]:
    """Within the block, figures this thread saves are saved at most at ``dpi``
    (``None`` or 0: unchanged)."""
    if not dpi:
        yield
        return
    _install()
    before = getattr(_active, "dpi", None)
    _active.dpi = float(dpi)
    try:
        yield
    finally:
        _active.dpi = before
