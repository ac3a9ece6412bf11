"""Switching the integration on and off: the two autofit hooks it patches, and the version check.

Every autofit search builds its ``Fitness`` in one place,
``SearchExecutionMixin.make_fitness`` (or a search's override of it); when
quick updates are due for a search, the fitness's class is switched to the
live subclass of its own class (:func:`.fitness.live_fitness_class`). autofit's
full update (``NonLinearSearch.perform_update``) is wrapped to hold the pyplot
lock and to draw the result. Nothing is patched before :func:`enable`;
:func:`disable` restores everything.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from autofit_jaxviz.autofit.fitness import live_fitness_class
from autofit_jaxviz.autofit.render import PYPLOT_LOCK
from autofit_jaxviz.config import Settings, load_settings

logger = logging.getLogger(__name__)

#: The oldest autofit with the hooks this module needs.
MINIMUM_AUTOFIT = "2026.10.26"
#: The newest autofit release series this module was tested with; a newer one
#: is used (with one warning) as long as every hook is there.
TESTED_AUTOFIT = "2026.10"
#: Searches that trace ``Fitness.call`` into a jitted loop, with no Python between steps.
JITTED_SEARCHES = frozenset({"BlackJAXNUTS", "SMC"})

_state: dict[str, Any] = {"enabled": False, "settings": None, "originals": {}}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_autofit() -> str:
    """Return autofit's version; raise ``RuntimeError`` when it is too old or a hook
    this integration patches is missing, naming the version found.

    autofit releases about monthly: a release newer than the tested one is used
    with one warning, so that upgrading autofit never locks a user out.
    """
    try:
        import autofit
        from autofit.non_linear.fitness import Fitness
        from autofit.non_linear.search.abstract_search import NonLinearSearch
        from autofit.non_linear.search.execution import SearchExecutionMixin
    except ImportError as error:
        raise RuntimeError(
            f"autofit_jaxviz.autofit needs autofit >= {MINIMUM_AUTOFIT} "
            f"(pip install 'autofit_jaxviz[autofit]'): {error}"
        ) from error
    version = getattr(autofit, "__version__", "unknown")
    found = _version_tuple(version)
    problems = []
    if found < _version_tuple(MINIMUM_AUTOFIT):
        problems.append(f"older than {MINIMUM_AUTOFIT}")
    needed = [
        (SearchExecutionMixin, "make_fitness"),
        (Fitness, "manage_quick_update"),
        (Fitness, "shutdown_quick_update"),
        (Fitness, "objective"),
        (Fitness, "log_likelihood_from"),
        (NonLinearSearch, "perform_update"),
    ]
    missing = [f"{cls.__name__}.{name}" for cls, name in needed if not hasattr(cls, name)]
    if missing:
        problems.append("missing hooks: " + ", ".join(missing))
    if problems:
        raise RuntimeError(
            f"autofit_jaxviz.autofit.enable() needs autofit >= {MINIMUM_AUTOFIT} with the hooks "
            f"it patches; found autofit {version} ({'; '.join(problems)})"
        )
    tested = _version_tuple(TESTED_AUTOFIT)
    if found[:len(tested)] > tested and version not in _warned_versions:
        _warned_versions.add(version)
        logger.warning("autofit %s is newer than the release this autofit_jaxviz was tested "
                       "with (%s.x); every hook it needs is present, so it is used", version,
                       TESTED_AUTOFIT)
    return version


_warned_versions: set[str] = set()


def enable(**settings: Any) -> Settings:
    """Switch live quick updates on for every autofit search built from now on.

    Keyword arguments override the configuration (see
    :func:`autofit_jaxviz.config.load_settings`), e.g. ``enable(background=True,
    backend="process")``. Bad settings raise ``ConfigError`` here, at start-up.
    Calling it again replaces the settings.
    """
    check_autofit()
    resolved = load_settings(**settings)
    from autofit.non_linear.search.abstract_search import NonLinearSearch
    from autofit.non_linear.search.execution import SearchExecutionMixin

    originals = _state["originals"]
    if not _state["enabled"]:
        originals["perform_update"] = NonLinearSearch.perform_update
        NonLinearSearch.perform_update = _perform_update
        # autofit's make_fitness, and any override of it in a search class
        # (defined already or later): the outermost one decides the class
        for cls in [SearchExecutionMixin, *_subclasses(SearchExecutionMixin)]:
            _wrap_make_fitness(cls)
        originals["__init_subclass__"] = SearchExecutionMixin.__dict__.get("__init_subclass__")
        SearchExecutionMixin.__init_subclass__ = classmethod(_init_search_subclass)  # type: ignore[assignment]
    _state.update(enabled=True, settings=resolved)
    logger.info("autofit_jaxviz enabled:\n%s", resolved.describe())
    return resolved


def disable() -> None:
    """Undo :func:`enable`: searches built afterwards are plain autofit again."""
    if not _state["enabled"]:
        return
    from autofit.non_linear.search.abstract_search import NonLinearSearch
    from autofit.non_linear.search.execution import SearchExecutionMixin

    originals = _state["originals"]
    NonLinearSearch.perform_update = originals.pop("perform_update")
    for cls, original in originals.pop("make_fitness").items():
        cls.make_fitness = original
    init_subclass = originals.pop("__init_subclass__")
    if init_subclass is None:
        del SearchExecutionMixin.__init_subclass__
    else:
        SearchExecutionMixin.__init_subclass__ = init_subclass
    _state.update(enabled=False, settings=None)


def is_enabled() -> bool:
    return bool(_state["enabled"])


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _init_search_subclass(cls: type, **kwargs: Any) -> None:
    from autofit.non_linear.search.execution import SearchExecutionMixin

    own = _state["originals"].get("__init_subclass__")
    if own is not None:  # one autofit may define one day: still called
        own.__get__(None, cls)(**kwargs)
    else:
        super(SearchExecutionMixin, cls).__init_subclass__(**kwargs)
    _wrap_make_fitness(cls)


def _wrap_make_fitness(cls: type) -> None:
    """Route ``cls``'s own ``make_fitness`` (if it has one) through :func:`_make_live`."""
    original = cls.__dict__.get("make_fitness")
    if original is None or isinstance(original, LiveMakeFitness):
        return
    _state["originals"].setdefault("make_fitness", {})[cls] = original
    cls.make_fitness = LiveMakeFitness(original)  # type: ignore[attr-defined]


class LiveMakeFitness:
    """A search class's ``make_fitness`` while the integration is on.

    An object of an importable class rather than a closure, so that a search
    class pickled by value (one defined in a notebook) still pickles.
    """

    def __init__(self, original: Any) -> None:
        self.original = original
        functools.update_wrapper(self, original)

    def __get__(self, search: Any, owner: type | None = None) -> Any:
        return self if search is None else functools.partial(self, search)

    def __call__(self, search: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_nesting, "depth", 0)
        _nesting.depth = depth + 1
        try:
            fitness = self.original(search, *args, **kwargs)
        finally:
            _nesting.depth = depth
        # an override calling super().make_fitness(): only the outermost call,
        # whose fitness the search will use, is made live
        return fitness if depth else _make_live(search, fitness)


#: How deep this thread is in nested make_fitness calls (overrides calling super).
_nesting = threading.local()


def _make_live(search: Any, fitness: Any) -> Any:
    from autofit.non_linear.fitness import ITERATIONS_NEVER, Fitness

    if not isinstance(fitness, Fitness) or not _state["enabled"]:
        return fitness
    cadence = fitness.iterations_per_quick_update
    if cadence is None or cadence >= ITERATIONS_NEVER or fitness.paths is None:
        return fitness  # no quick updates for this fit (or autofit's preflight copy)
    if getattr(fitness, "_background_quick_update", None) is not None:
        # autofit's own thread was switched on by its config: ours replaces it
        fitness._background_quick_update.shutdown()
        fitness._background_quick_update = None
    # a subclass of the fitness's own class: autofit's and the user's overrides stay
    fitness.__class__ = live_fitness_class(type(fitness))
    fitness._jaxviz_setup(
        settings=_state["settings"],
        cores=int(getattr(search, "number_of_cores", 1) or 1),
        in_jit=type(search).__name__ in JITTED_SEARCHES,
    )
    return fitness


def _perform_update(search: Any, *args: Any, **kwargs: Any) -> Any:
    # autofit's full update draws with pyplot on the main thread; never at the
    # same time as a quick update drawing with pyplot on the render thread.
    with PYPLOT_LOCK:
        samples = _state["originals"]["perform_update"](search, *args, **kwargs)
    bound = _perform_update_arguments(*args, **kwargs)
    if not bound["during_analysis"]:
        _draw_result(bound["analysis"], samples)
    return samples


def _perform_update_arguments(model: Any = None, analysis: Any = None, during_analysis: bool = True,
                         *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``perform_update``'s arguments by name, however autofit passed them."""
    return {"analysis": analysis, "during_analysis": during_analysis}


def _draw_result(analysis: Any, samples: Any) -> None:
    """The fit's result is known: leave its maximum-likelihood sample as the picture."""
    from autofit_jaxviz.autofit.hub import awaiting_result

    hub = awaiting_result.get(id(analysis))
    if hub is None or hub.analysis is not analysis:
        return
    hub.fit_succeeded()
    try:
        vector = samples.max_log_likelihood(as_instance=False)
        log_likelihood = float(samples.max_log_likelihood_sample.log_likelihood)
    except Exception:  # noqa: BLE001 - no samples (an empty or bypassed fit): nothing to draw
        logger.debug("no maximum-likelihood sample in the result", exc_info=True)
        awaiting_result.pop(id(analysis), None)
        return
    hub.draw_result(vector, log_likelihood)
