"""What an analysis declares about its quick update, and the backend that follows.

Two attributes, both off unless the analysis says otherwise:

``supports_background_update``
    the analysis's ``perform_quick_update`` is safe to run off the sampler
    thread (it reads only the instance it is given and its own immutable data,
    and draws without pyplot's global state). autofit's ``Analysis`` already
    defines it as a property returning ``False``.
``supports_jax_visualization``
    its visualizer accepts JAX arrays, so the payload is not converted to
    NumPy. autofit's ``Analysis`` defines it as ``self.is_jax``, and autofit's
    own ``Fitness`` reads it with ``getattr(analysis, ..., False)``; this module
    reads it the same way, so both libraries agree about every analysis.

Background updates run only when the user's config (``jaxviz.background``)
*and* the analysis both say yes: the user decides whether they want it, the
analysis author decides whether it is safe.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from autofit_jaxviz.backends import Backend
from autofit_jaxviz.config import Settings

logger = logging.getLogger(__name__)

BACKGROUND_FLAG = "supports_background_update"
JAX_FLAG = "supports_jax_visualization"


class LiveUpdates:
    """One-line opt-in to background quick updates.

    ``class MyAnalysis(LiveUpdates, af.Analysis)`` or ``class MyAnalysis(LiveUpdates)``.
    It only sets a class attribute: no ``__init__``, no state, so it leaves
    autofit's ``Analysis.__init__`` and the rest of the MRO alone. It must come
    *before* ``af.Analysis`` in the bases, because ``Analysis`` defines the same
    name as a property; listing it after would silently keep ``False``, so that
    raises ``TypeError`` when the class is created.
    """

    __slots__ = ()

    supports_background_update: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for klass in cls.__mro__:
            if BACKGROUND_FLAG not in vars(klass):
                continue
            if klass is LiveUpdates or issubclass(klass, LiveUpdates):
                return  # the mixin's opt-in, or the subclass's own explicit choice
            raise TypeError(
                f"{cls.__qualname__}: {klass.__qualname__}.{BACKGROUND_FLAG} comes before "
                f"LiveUpdates in the method resolution order and hides its opt-in; list "
                f"LiveUpdates first, e.g. class {cls.__name__}(LiveUpdates, "
                f"{klass.__name__})"
            )


def _flag(analysis: Any, name: str) -> bool:
    value = getattr(analysis, name, False)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(
        f"{type(analysis).__qualname__}.{name} must be True or False, got {value!r}"
    )


def background_update_supported(analysis: Any) -> bool:
    """Whether ``analysis`` declares its quick update safe off the sampler thread."""
    return _flag(analysis, BACKGROUND_FLAG)


def jax_visualization_supported(analysis: Any) -> bool:
    """Whether ``analysis``'s visualizer takes JAX arrays (so no NumPy conversion)."""
    return _flag(analysis, JAX_FLAG)


class BackendDecision(NamedTuple):
    """The backend for a fit, and the one-line reason to log."""

    backend: Backend
    reason: str

    @property
    def background(self) -> bool:
        """Whether the quick update leaves the sampler thread."""
        return self.backend != "sync"


def decide_backend(settings: Settings, analysis: Any) -> BackendDecision:
    """Choose ``"thread"``/``"process"`` or ``"sync"``; pure, so it can be tested and logged."""
    name = type(analysis).__qualname__
    source = settings.sources.get("background", "default")
    if not settings.background:
        return BackendDecision(
            "sync",
            f"quick updates run synchronously on the sampler thread: jaxviz.background is "
            f"false ({source})",
        )
    if not background_update_supported(analysis):
        return BackendDecision(
            "sync",
            f"quick updates run synchronously on the sampler thread although "
            f"jaxviz.background is true ({source}): {name} does not declare "
            f"{BACKGROUND_FLAG}; if its perform_quick_update is thread-safe, "
            f"add the LiveUpdates mixin (class {name}(LiveUpdates, ...))",
        )
    backend_source = settings.sources.get("backend", "default")
    return BackendDecision(
        settings.backend,
        f"quick updates run in the background ({settings.backend} backend, "
        f"{backend_source}): jaxviz.background is true ({source}) and {name} declares "
        f"{BACKGROUND_FLAG}",
    )


def log_backend_decision(
    settings: Settings, analysis: Any, log: logging.Logger | None = None
) -> BackendDecision:
    """:func:`decide_backend` plus its one log line.

    A warning when the user asked for background updates and did not get them
    (a setting must never be ignored silently), info otherwise.
    """
    decision = decide_backend(settings, analysis)
    level = logging.WARNING if settings.background and not decision.background else logging.INFO
    (log or logger).log(level, "%s", decision.reason)
    return decision


def needs_host_conversion(analysis: Any) -> bool:
    """Whether JAX arrays in this analysis's payload must become NumPy before rendering."""
    return not jax_visualization_supported(analysis)


__all__ = [
    "BackendDecision",
    "LiveUpdates",
    "background_update_supported",
    "decide_backend",
    "jax_visualization_supported",
    "log_backend_decision",
    "needs_host_conversion",
]
