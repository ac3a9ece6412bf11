"""Show the newest quick-update picture in a notebook: one output, updated in place.

A fit runs for hours in one cell while the renderer works on a thread (or in a
render process). What goes wrong when that renderer talks to Jupyter directly,
measured with real kernels:

* ``display()`` of a new object, or ``print``, from a thread lands in the
  *latest* cell on ipykernel 7 (on 6.29 text goes to the cell that started
  the thread, displays to the latest cell);
* ``clear_output(wait=True)`` wipes the output the updates were meant for;
* one new image per update bloats a notebook to tens of MB;
* a pyplot figure the renderer has open when any cell finishes is shown,
  half drawn, by the inline backend's post-execute hook, then closed under the
  renderer.

So :class:`NotebookDisplay` displays **one** placeholder from the fit's cell
(main thread) with a display id and afterwards only *updates* it
(``update_display_data``): frontends route those by display id to the output
that owns it, whichever cell is running. The update is published with the
kernel's latest request as parent (the request a frontend is still listening
to; the fit cell's own request is forgotten by the frontend once another cell
runs). Text the renderer emits is pinned to the fit's cell instead
(:meth:`NotebookDisplay.fit_cell_output`).
:func:`~autofit_jaxviz.render.pyplot.pyplot_guard` hides the renderer's pyplot
figures from the inline backend.

Outside a kernel (scripts, terminal IPython, pytest) nothing is displayed; the
renderer still writes its files. ``AUTOFIT_JAXVIZ_NOTEBOOK_DISPLAY=0``,
autofit's ``PYAUTO_DISABLE_IPYTHON_DISPLAY=1`` or ``enabled=False`` switch the
display off; nothing switches it on against them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autofit_jaxviz.config import env_var, environment_value, is_true_word
from autofit_jaxviz.render.png import PNG_SIGNATURE
from autofit_jaxviz.render.pyplot import PyplotGuarded, pyplot_guard

logger = logging.getLogger(__name__)

#: ``0``/``false``/``no``/``off`` switches the notebook display off (parsed by the config).
ENV_NOTEBOOK_DISPLAY = env_var("notebook_display")
#: autofit's switch, honoured as well: ``1``/``true``/``yes``/``on`` switches it off.
ENV_PYAUTO_DISABLE = "PYAUTO_DISABLE_IPYTHON_DISPLAY"

# ------------------------------------------------------------ kernel detection


def _kernel_shell() -> Any | None:
    """The running ipykernel shell, or ``None``; never imports IPython or ipykernel.

    A kernel's shell (Jupyter, JupyterLab, VS Code, Colab's subclass) is an
    ``ipykernel.zmqshell.ZMQInteractiveShell``, so that module is already
    imported whenever one runs; if it is not, no kernel runs here.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    get_ipython = getattr(ipython, "get_ipython", None)
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    if get_ipython is None or zmqshell is None:
        return None
    try:
        shell = get_ipython()
    except Exception:  # a half-torn-down interpreter
        return None
    kernel_shell = getattr(zmqshell, "ZMQInteractiveShell", None)
    if shell is None or kernel_shell is None or not isinstance(shell, kernel_shell):
        return None
    return shell


def in_kernel() -> bool:
    """True inside a Jupyter kernel (notebook, Lab, VS Code, Colab); false in
    plain Python, terminal IPython and pytest. Cheap: imports nothing."""
    return _kernel_shell() is not None


def switched_off_reason(
    enabled: bool | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Why the switches turn the notebook display off, or ``None`` if they allow it.

    ``enabled=False`` and either environment variable turn it off; ``True`` or
    ``None`` leave the decision to the environment (an operator's off switch,
    e.g. for papermill runs, beats the notebook's own code). A value of ours
    that is neither raises :class:`~autofit_jaxviz.config.ConfigError`.
    """
    env = os.environ if environ is None else environ
    if enabled is False:
        return "switched off by the enabled=False argument"
    if environment_value("notebook_display", env) is False:
        return f"switched off by {ENV_NOTEBOOK_DISPLAY}={env[ENV_NOTEBOOK_DISPLAY]}"
    if is_true_word(env.get(ENV_PYAUTO_DISABLE, "")):
        return f"switched off by {ENV_PYAUTO_DISABLE}={env[ENV_PYAUTO_DISABLE]}"
    return None


# ------------------------------------------------------------------ display


class _FitCellRender[P, R]:
    """A render whose text goes to the fit's cell; pickles as its plain self."""

    def __init__(self, display: NotebookDisplay, render: Callable[[P], R], guard: bool) -> None:
        self.display = display
        self.render = render
        self.guard = guard

    def __call__(self, payload: P) -> R:
        self.display.pin_thread_to_fit_cell()
        if self.guard:
            with pyplot_guard():
                return self.render(payload)
        return self.render(payload)

    def __reduce__(self) -> tuple[Any, ...]:
        # a render process has no kernel to route text to: send the render alone
        if self.guard:
            return (PyplotGuarded, (self.render,))
        return (_identity, (self.render,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.render!r}, guard_pyplot={self.guard})"


def _identity(obj: Any) -> Any:
    return obj


class NotebookDisplay:
    """One notebook output showing the newest quick-update PNG, updated in place.

    Create it in the fit's cell (on the main thread): in a kernel it displays
    a placeholder with a display id there. :meth:`update` (thread-safe) swaps
    the picture; :meth:`on_rendered` is a ready-made ``on_rendered`` for
    :class:`~autofit_jaxviz.render.worker.QuickUpdateWorker`. It never displays a new
    object after creation and never clears output.

    Inactive (``enabled`` false; updates are no-ops) outside a kernel, when a
    switch turns it off (see :func:`switched_off_reason`), or when created
    off the main thread: there the display would land in whatever cell runs
    last, so nothing is displayed and one info line says why. ``reason``
    tells which.

    Parameters
    ----------
    enabled
        ``False`` switches the display off; ``None``/``True`` defer to the
        environment variables.
    image_path
        The PNG to show when a render returns no path of its own.
    placeholder
        Text shown until the first picture arrives.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        image_path: str | os.PathLike[str] | None = None,
        placeholder: str = "quick update: waiting for the first picture",
    ) -> None:
        self.image_path = None if image_path is None else Path(image_path)
        self._lock = threading.Lock()
        self._updates = 0
        self._handle: Any = None
        self._shell: Any = None
        self._fit_parent: dict[str, Any] | None = None
        self._pinned = threading.local()
        reason = switched_off_reason(enabled)
        shell = _kernel_shell()
        on_main = threading.current_thread() is threading.main_thread()
        if shell is not None and on_main:
            # the cell that creates the display is the fit's cell
            self._shell = shell
            get_parent = getattr(shell, "get_parent", None)
            parent = get_parent() if get_parent is not None else None
            self._fit_parent = dict(parent) if parent else None
        if reason is None:
            if shell is None:
                reason = "not running in a Jupyter kernel"
            elif not on_main:
                reason = "created off the main thread, so it has no cell of its own"
                logger.info(
                    "notebook display off: %s; create it in the fit's cell (PNG files are "
                    "still written)",
                    reason,
                )
        if reason is None:
            from IPython.display import Pretty, display

            self._handle = display(Pretty(placeholder), display_id=True)
            if self._handle is None:  # pragma: no cover - a shell without display ids
                reason = "the kernel returned no display handle"
        self.reason: str | None = reason

    @property
    def enabled(self) -> bool:
        """Whether updates reach a notebook output."""
        return self._handle is not None

    @property
    def display_id(self) -> str | None:
        return None if self._handle is None else self._handle.display_id

    @property
    def updates(self) -> int:
        """How many pictures were sent to the output so far."""
        with self._lock:
            return self._updates

    def update(self, png: str | os.PathLike[str] | bytes) -> bool:
        """Show ``png`` (a path, or PNG bytes) in place of the current picture.

        Call it after the file is complete (the worker's ``on_rendered`` runs
        after the render returned;
        :func:`~autofit_jaxviz.render.png.write_png_atomically` keeps other
        readers safe too). Thread-safe; returns ``False`` when inactive or when
        the data is not a PNG. Raises ``OSError`` if the file cannot be read.
        """
        handle = self._handle
        if handle is None:
            return False
        data = bytes(png) if isinstance(png, bytes | bytearray) else Path(png).read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            logger.warning("notebook display: %s is not a PNG; not shown", _describe(png))
            return False
        from IPython.display import Image

        image = Image(data=data, format="png")
        with self._lock, self._latest_request_parent():
            handle.update(image)
            self._updates += 1
        return True

    def on_rendered(self, payload: Any, result: Any) -> None:
        """Worker callback: show the PNG the render returned (path or bytes), else
        ``image_path``; nothing if neither is given."""
        del payload
        if isinstance(result, str | os.PathLike | bytes | bytearray):
            self.update(result)
        elif self.image_path is not None:
            self.update(self.image_path)

    def wrap_render[P, R](
        self, render: Callable[[P], R], *, guard_pyplot: bool = True
    ) -> Callable[[P], R]:
        """``render`` with its thread's text pinned to the fit's cell and, by
        default, inside :func:`~autofit_jaxviz.render.pyplot.pyplot_guard`.

        Pickles to the plain (guarded) render, so it also serves
        ``backend="process"``, where the child has its own pyplot and no kernel.
        """
        if not callable(render):
            raise TypeError(f"render must be callable, got {render!r}")
        return _FitCellRender(self, render, guard_pyplot)

    @contextlib.contextmanager
    def fit_cell_output(self) -> Iterator[None]:
        """Within the block, this thread's prints, log lines on stderr and
        ``display`` calls go to the fit's cell (ipykernel >= 7; elsewhere the
        kernel's own routing applies: on 6.29 a thread's text goes to the cell
        that started the thread)."""
        tokens = self._set_thread_parent(self._fit_parent)
        try:
            yield
        finally:
            if tokens is not None:
                self._shell.reset_thread_parent(tokens)

    def pin_thread_to_fit_cell(self) -> None:
        """Like :meth:`fit_cell_output`, for the rest of this thread's life.

        Used by :meth:`wrap_render` on the renderer thread, so the worker's own
        log lines (render failures) follow the fit too. Does nothing on the
        main thread, which the kernel routes itself.
        """
        if getattr(self._pinned, "done", False):
            return
        self._pinned.done = True
        self._set_thread_parent(self._fit_parent)

    def _set_thread_parent(self, parent: dict[str, Any] | None) -> Any:
        shell = self._shell
        if shell is None or not parent or threading.current_thread() is threading.main_thread():
            return None
        set_thread_parent = getattr(shell, "set_thread_parent", None)  # ipykernel >= 7
        if set_thread_parent is None or not hasattr(shell, "reset_thread_parent"):
            return None
        return set_thread_parent(parent)

    @contextlib.contextmanager
    def _latest_request_parent(self) -> Iterator[None]:
        """Publish with the kernel's latest request as parent, even on a thread
        pinned to the fit's cell: frontends drop messages whose request they
        have stopped listening to, and route updates by display id anyway."""
        kernel = getattr(self._shell, "kernel", None)
        get_parent = getattr(kernel, "get_parent", None)
        tokens = None
        if get_parent is not None:
            with contextlib.suppress(Exception):
                tokens = self._set_thread_parent(get_parent("shell"))
        try:
            yield
        finally:
            if tokens is not None:
                self._shell.reset_thread_parent(tokens)

    def __repr__(self) -> str:
        state = f"display_id={self.display_id!r}" if self.enabled else f"off: {self.reason}"
        return f"NotebookDisplay({state}, updates={self.updates})"


def _describe(png: object) -> str:
    if isinstance(png, bytes | bytearray):
        return f"{len(png)} bytes"
    return repr(os.fspath(png)) if isinstance(png, str | os.PathLike) else repr(png)


def display_for_run(enabled: bool) -> NotebookDisplay | None:
    """One live image in the running cell, when in a kernel and not switched off
    (the PyAutoFit hub and :class:`~autofit_jaxviz.live.LiveView` both use it)."""
    from autofit_jaxviz.config import ConfigError

    if not enabled or not in_kernel():
        return None
    try:
        display = NotebookDisplay()
    except ConfigError as error:  # the variable changed after the settings were read
        logger.warning("notebook display off: %s", error)
        return None
    return display if display.enabled else None
