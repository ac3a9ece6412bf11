"""pyplot on a render thread, without touching the notebook's or the script's figures.

matplotlib is not thread-safe and pyplot keeps one global figure registry: a
visualizer that uses pyplot on the render thread would otherwise share it with
the main thread (and with the inline backend's post-execute hook, which shows
and closes every registered figure when any cell finishes). The process
backend needs none of this: it shares no pyplot state at all.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any


class _ThreadFigs:
    """Stands in for ``Gcf.figs``: pyplot's figure registry, per guarded thread.

    pyplot reads ``Gcf.figs`` on every call, so swapping the class attribute
    for this view gives a thread inside :func:`pyplot_guard` a registry of its
    own, while every other thread (the kernel's main thread with its
    post-execute hook included) keeps seeing the original dict, unchanged.
    """

    __slots__ = ("shared", "_local")
    _autofit_jaxviz_thread_figs = True

    def __init__(self, shared: OrderedDict[Any, Any]) -> None:
        self.shared = shared
        self._local = threading.local()

    @property
    def current(self) -> OrderedDict[Any, Any]:
        figs = getattr(self._local, "figs", None)
        return self.shared if figs is None else figs

    # pyplot and IPython use get/pop/values/items/clear/move_to_end; delegate all
    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)

    def __getitem__(self, key: Any) -> Any:
        return self.current[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.current[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.current[key]

    def __contains__(self, key: object) -> bool:
        return key in self.current

    def __iter__(self) -> Iterator[Any]:
        return iter(self.current)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self.current)

    def __len__(self) -> int:
        return len(self.current)

    def __bool__(self) -> bool:
        return bool(self.current)

    def __eq__(self, other: object) -> bool:
        return self.current == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"_ThreadFigs({self.current!r})"


class _PrivateFigs(OrderedDict[Any, Any]):
    """One guarded thread's figure registry; remembers every figure it held,
    including those the visualizer closed itself."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[weakref.ref[Any]] = []

    def __setitem__(self, key: Any, manager: Any) -> None:
        super().__setitem__(key, manager)
        figure = getattr(getattr(manager, "canvas", None), "figure", None)
        if figure is not None and not (self.opened and self.opened[-1]() is figure):
            self.opened.append(weakref.ref(figure))


_install_lock = threading.Lock()


def _thread_figs() -> _ThreadFigs:
    """Install the per-thread figure registry once (idempotent, thread-safe)."""
    from matplotlib._pylab_helpers import Gcf

    with _install_lock:
        figs = Gcf.figs
        if not getattr(figs, "_autofit_jaxviz_thread_figs", False):
            # the shared view *is* the old dict, so a main-thread call racing
            # with the swap writes to the same place either way
            figs = _ThreadFigs(figs)
            Gcf.figs = figs  # type: ignore[assignment]
        return figs  # type: ignore[return-value]


def _forget_in_inline_backend(figures: list[Any]) -> None:
    """Drop closed figures from the inline backend's to-draw list.

    In interactive mode it appends every new pyplot figure and keeps it until
    the next cell finishes: a renderer opening one figure per update during an
    hours-long fit cell would otherwise pile them all up.
    """
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    to_draw = getattr(getattr(inline, "show", None), "_to_draw", None)
    if not isinstance(to_draw, list):
        return
    for fig in figures:
        with contextlib.suppress(ValueError):
            to_draw.remove(fig)  # one atomic list operation under the GIL


@contextlib.contextmanager
def pyplot_guard() -> Iterator[None]:
    """Run pyplot code so its figures stay private to this thread and are closed after.

    Inside the block ``plt.figure/plot/gcf/gca/savefig/clf/close`` work on a
    figure registry of this thread's own: the inline backend's post-execute
    hook (which shows and closes every registered figure when any cell
    finishes) never sees them, the user's current figure is never drawn into,
    and everything opened in the block is closed when it ends. Nests.

    Still shared with the main thread, and so able to race: ``rcParams`` and
    styles (``plt.rcParams[...] =``, ``plt.style.use``, ``rc_context``),
    ``plt.ion/ioff``, the backend (``matplotlib.use``, ``switch_backend``)
    and matplotlib's internal caches. ``plt.show()`` inside the block still
    displays from this thread: visualizers should save files. With a GUI
    backend (a script) figures are still created off the main thread. The
    process backend (``backend="process"``) avoids all of this.
    """
    figs = _thread_figs()
    local = figs._local
    previous = getattr(local, "figs", None)
    mine = _PrivateFigs()
    local.figs = mine
    try:
        yield
    finally:
        try:
            if mine:
                from matplotlib._pylab_helpers import Gcf

                for manager in list(mine.values()):  # this thread's view: only ours
                    Gcf.destroy(manager)
                mine.clear()
            figures = [fig for ref in mine.opened if (fig := ref()) is not None]
            if figures:
                _forget_in_inline_backend(figures)
        finally:
            local.figs = previous


class PyplotGuarded[P, R]:
    """``render`` run inside :func:`pyplot_guard`; picklable if ``render`` is."""

    def __init__(self, render: Callable[[P], R]) -> None:
        if not callable(render):
            raise TypeError(f"render must be callable, got {render!r}")
        self.render = render

    def __call__(self, payload: P) -> R:
        with pyplot_guard():
            return self.render(payload)

    def __repr__(self) -> str:
        return f"PyplotGuarded({self.render!r})"

