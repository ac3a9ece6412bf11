"""Live quick updates for real PyAutoFit searches.

``autofit_jaxviz.autofit.enable()`` switches this library on for every search
built afterwards; ``disable()`` restores autofit exactly. Nothing is patched
until ``enable()`` is called.

How it hooks in: every autofit search builds its ``Fitness`` in one place,
``SearchExecutionMixin.make_fitness``. When quick updates are due for that
search (a finite ``iterations_per_quick_update``), the fitness's class is
switched to :class:`LiveFitness`, which keeps autofit's cadence and its
``model.results`` text but hands the best *parameter vector* to this library's
latest-only worker, where the instance is built and drawn:

* host-driven searches (Emcee, Dynesty, Nautilus, LBFGS, Drawer, MultiStart…)
  report through ``manage_quick_update``, called from Python;
* searches that trace ``Fitness.call`` into one jitted loop (BlackJAX NUTS,
  SMC) get the stateless in-jit hook inside ``call``, thinned on the device so
  only about one evaluation in ``iterations_per_quick_update`` calls the host;
* forked multi-core pools (``number_of_cores > 1``) send each child's best to
  the parent, which renders the global best with its one worker.

The worker never lives in the fitness's ``__dict__`` (it sits in a registry
keyed by the fitness), so a fitness pickles (Dynesty checkpoints, resumes),
and an unpickled copy in the same process finds the same worker again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autofit_jaxviz.config import SETTING_KEYS, Settings, load_settings
from autofit_jaxviz.flags import decide_update_mode, needs_host_conversion
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.worker import QuickUpdateWorker

logger = logging.getLogger(__name__)

#: The autofit releases whose hooks this module was written against.
SUPPORTED_AUTOFIT = (">=2026.10.26", "<2026.11")
#: Searches that trace ``Fitness.call`` into a jitted loop, with no Python between steps.
JITTED_SEARCHES = frozenset({"BlackJAXNUTS", "SMC"})
#: The image a quick update is expected to write (autofit's LiveDisplay looks for it too).
QUICK_UPDATE_IMAGE = "fit.png"

#: Held while pyplot draws: autofit's full update (main thread) and a quick
#: update on the render thread both use pyplot's global state.
PYPLOT_LOCK = threading.RLock()

_state: dict[str, Any] = {"enabled": False, "settings": None, "originals": {}}
_hubs: dict[str, _Hub] = {}
_hubs_lock = threading.Lock()


# --------------------------------------------------------------------------- enable


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_autofit() -> str:
    """Return autofit's version, or raise ``RuntimeError`` naming it and the supported range."""
    try:
        import autofit
        from autofit.non_linear.fitness import Fitness
        from autofit.non_linear.search.abstract_search import NonLinearSearch
        from autofit.non_linear.search.execution import SearchExecutionMixin
    except ImportError as error:
        raise RuntimeError(
            "autofit_jaxviz.autofit needs autofit "
            f"{','.join(SUPPORTED_AUTOFIT)} (pip install 'autofit_jaxviz[autofit]'): {error}"
        ) from error
    version = getattr(autofit, "__version__", "unknown")
    low, high = (_version_tuple(bound.lstrip("<>=")) for bound in SUPPORTED_AUTOFIT)
    problems = []
    if not low <= _version_tuple(version) < high:
        problems.append("version outside the supported range")
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
            f"autofit_jaxviz.autofit.enable() supports autofit {','.join(SUPPORTED_AUTOFIT)}; "
            f"found autofit {version} ({'; '.join(problems)})"
        )
    return version


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
        originals["make_fitness"] = SearchExecutionMixin.make_fitness
        originals["perform_update"] = NonLinearSearch.perform_update
        SearchExecutionMixin.make_fitness = _make_fitness
        NonLinearSearch.perform_update = _perform_update
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
    SearchExecutionMixin.make_fitness = originals.pop("make_fitness")
    NonLinearSearch.perform_update = originals.pop("perform_update")
    _state.update(enabled=False, settings=None)


def is_enabled() -> bool:
    return bool(_state["enabled"])


def _make_fitness(search: Any, analysis: Any, model: Any, **overrides: Any) -> Any:
    fitness = _state["originals"]["make_fitness"](search, analysis, model, **overrides)
    from autofit.non_linear.fitness import ITERATIONS_NEVER

    cadence = fitness.iterations_per_quick_update
    if cadence is None or cadence >= ITERATIONS_NEVER or fitness.paths is None:
        return fitness  # no quick updates for this fit (or autofit's preflight copy)
    if fitness._background_quick_update is not None:
        # autofit's own thread was switched on by its config: ours replaces it
        fitness._background_quick_update.shutdown()
        fitness._background_quick_update = None
    fitness.__class__ = _live_fitness_class()
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
        return _state["originals"]["perform_update"](search, *args, **kwargs)


# --------------------------------------------------------------------------- render


class AutofitRender:
    """Draw one quick update: what runs on the worker (thread or render process).

    It holds the constant part (analysis, model, output paths), sent once to a
    render process; each call gets only a :class:`BestFit` with the parameter
    vector. The instance is built here, not on the sampler thread.
    """

    def __init__(self, analysis: Any, model: Any, paths: Any, *, convert: bool,
                 lock_pyplot: bool) -> None:
        self.analysis = analysis
        self.model = model
        self.paths = paths
        self.convert = convert
        self.lock_pyplot = lock_pyplot
        self.has_visual = True

    def warm_up(self) -> None:
        """Run by a render process before it says it is ready: the imports and
        font loading of a first picture, paid before the fit needs one."""
        from autofit.text import text_util  # noqa: F401

        from autofit_jaxviz.display import warm_up_matplotlib

        warm_up_matplotlib()

    def __call__(self, best: BestFit) -> Path | None:
        from autofit.text import text_util

        from autofit_jaxviz.convert import to_host

        vector = to_host(best.parameters) if self.convert else best.parameters
        info = text_util.result_max_lh_info_from(
            max_log_likelihood_sample=np.asarray(vector, dtype=float).tolist(),
            max_log_likelihood=float(best.log_likelihood),
            model=self.model,
        )
        self.paths.output_model_results(result_info="\n".join(info))
        if not self.has_visual:
            return None
        # May raise (a vector outside a profile's domain): the worker logs it
        # and the fit goes on; model.results above is written regardless.
        instance = self.model.instance_from_vector(vector=vector, xp=np)
        try:
            if self.lock_pyplot:
                with PYPLOT_LOCK:
                    self.analysis.perform_quick_update(self.paths, instance)
            else:
                self.analysis.perform_quick_update(self.paths, instance)
        except NotImplementedError:
            # autofit keeps writing model.results for such analyses: so do we
            self.has_visual = False
            logger.info("%s has no perform_quick_update: only model.results is updated",
                        type(self.analysis).__name__)
            return None
        image = Path(self.paths.image_path) / QUICK_UPDATE_IMAGE
        return image if image.exists() else None


# --------------------------------------------------------------------------- hub


class _Hub:
    """Per-fit routing: owns the worker; in a forked child, forwards to the parent."""

    def __init__(self, fitness: Any, settings: Settings, cores: int, in_jit: bool) -> None:
        self.owner = os.getpid()
        self.name = f"quick-update[{type(fitness.analysis).__name__}]"
        decision = decide_update_mode(settings, fitness.analysis)
        level = logging.WARNING if settings.background and not decision.background else \
            logging.INFO
        logger.log(level, "%s", decision.reason)
        self.mode = decision.mode
        render_args = (fitness.analysis, fitness.model, fitness.paths)
        convert = needs_host_conversion(fitness.analysis)
        if self.mode == "process" and not settings.user_set("backend"):
            self.mode = _process_or_thread(AutofitRender(*render_args, convert=convert,
                                                         lock_pyplot=False), self.name)
        self.render = AutofitRender(*render_args, convert=convert,
                                    lock_pyplot=self.mode == "thread")
        render: Callable[[BestFit], Any] = self.render
        display = _notebook_display(settings)
        if display is not None:
            # text from the render stays in the fit's cell; pyplot figures the
            # visualizer opens on the render thread never reach the inline backend
            render = display.wrap_render(render, guard_pyplot=self.mode != "process")
        elif self.mode == "thread":
            from autofit_jaxviz.display import guard_pyplot

            render = guard_pyplot(render)
        self.display_rendered = display.on_rendered if display is not None else None
        self.worker = QuickUpdateWorker(
            render, mode=self.mode, name=self.name,
            min_interval=settings.min_render_interval,
            on_rendered=self._on_rendered,
            shutdown_timeout=settings.shutdown_timeout,
        )
        self.shutdown_timeout = settings.shutdown_timeout
        # spawn before the sampler opens its HDF5 backend (see ProcessRender.start)
        self.worker.prestart()
        self.best = -np.inf  # the best handed to the worker
        self.best_fit: BestFit | None = None
        self.drawn = -np.inf  # the best whose picture was drawn without an error
        self.lock = threading.Lock()
        self.channel = None
        self.children_best: tuple[float, list[float]] | None = None
        self.listener: threading.Thread | None = None
        if cores > 1:
            self._open_channel()
        self.sink = None
        if in_jit:
            from autofit_jaxviz.callback import HostSink

            self.sink = HostSink(self.offer_best, name=self.name)

    # called by the fitness ------------------------------------------------
    def improved(self, vector: Any, log_likelihood: float) -> None:
        """Every new best of this process's fitness. A forked child forwards it at
        once, so the parent always knows the global best (and draws it last)."""
        if os.getpid() != self.owner and self.channel is not None:
            self.channel.put(("best", float(log_likelihood),
                              np.asarray(vector, dtype=float).tolist()))

    def due(self, vector: Any, log_likelihood: float, step: int) -> None:
        """autofit's cadence says a quick update is due."""
        if os.getpid() != self.owner:
            if self.channel is None:
                # a fork we were not told about: render in this process after all
                self._become_local()
            else:
                self.channel.put(("due", step))
                return
        self.offer(vector, log_likelihood, step)

    def offer(self, vector: Any, log_likelihood: float, step: int) -> None:
        with self.lock:
            if self.children_best is not None and self.children_best[0] > log_likelihood:
                log_likelihood, vector = self.children_best
        self.offer_best(BestFit(float(log_likelihood), np.array(vector, dtype=float), step))

    def offer_best(self, best: BestFit) -> None:
        with self.lock:
            if not best.log_likelihood > self.best:
                return  # not better than what is already on its way: no new image
            self.best, self.best_fit = best.log_likelihood, best
        self.worker.submit(best)

    def _on_rendered(self, best: BestFit, result: Any) -> None:
        with self.lock:
            self.drawn = max(self.drawn, best.log_likelihood)
        if self.display_rendered is not None:
            self.display_rendered(best, result)

    def _open_channel(self) -> None:
        # Fork-inherited: the children write their best to it, the parent's
        # listener thread forwards improvements to the one worker.
        self.channel = multiprocessing.get_context("fork").SimpleQueue()
        self.listener = threading.Thread(target=self._listen, name=f"{self.name}-children",
                                         daemon=True)
        self.listener.start()

    def _listen(self) -> None:
        channel = self.channel
        while True:
            message = channel.get()
            if message is None:
                return
            try:
                if message[0] == "best":
                    _, log_likelihood, vector = message
                    with self.lock:
                        if self.children_best is None or log_likelihood > self.children_best[0]:
                            self.children_best = (log_likelihood, vector)
                elif message[0] == "due" and self.children_best is not None:
                    log_likelihood, vector = self.children_best
                    self.offer_best(BestFit(log_likelihood, np.asarray(vector, dtype=float),
                                            message[1]))
            except Exception:  # pragma: no cover - never let the listener die
                logger.exception("%s: a child's quick update could not be submitted", self.name)

    def _become_local(self) -> None:
        self.owner = os.getpid()
        self.best = self.drawn = -np.inf
        self.lock = threading.Lock()

    def close(self, vector: Any, log_likelihood: float, step: int) -> bool:
        """End of the fit: draw the global best (whatever the cadence), then stop."""
        if os.getpid() != self.owner:
            return True  # a child: the parent owns the worker
        deadline = time.monotonic() + self.shutdown_timeout
        if self.channel is not None:
            self.channel.put(None)
            if self.listener is not None:
                self.listener.join(max(0.0, deadline - time.monotonic()))
        if self.sink is not None:
            self.sink.flush()
        if vector is not None or self.children_best is not None:
            if vector is None:
                vector, log_likelihood = self.children_best[1], -np.inf
            self.offer(vector, log_likelihood, step)
        # The final best may have been handed on earlier and its picture failed
        # (a full disk for a moment): draw it again, so the image left behind
        # is of the fit that model.results names. Only once everything handed
        # on has finished (a render still running is not a failure), and only
        # for a visualizer that has worked at least once.
        if self.worker.flush(max(0.0, deadline - time.monotonic())):
            with self.lock:
                redraw = self.best_fit if self.drawn < self.best else None
            if redraw is not None and self.worker.stats.rendered > 0:
                self.worker.submit(redraw)
        with _hubs_lock:
            for key, hub in list(_hubs.items()):
                if hub is self:
                    del _hubs[key]
        return self.worker.shutdown(max(0.0, deadline - time.monotonic()))


def _process_or_thread(render: AutofitRender, name: str) -> str:
    """The default backend is ``process``; where this fit cannot use it (an
    analysis defined in a notebook, say), use a thread and say why, as
    information: nobody asked for the process."""
    from autofit_jaxviz.render_process import main_is_guarded, needs_main, unpicklable_part

    from_main = needs_main(render)
    if from_main is not None and not main_is_guarded():
        reason = f"it needs {from_main!r} from __main__ (a notebook or an unguarded script)"
    else:
        part = unpicklable_part(render)
        reason = None if part is None else f"it cannot be pickled: {part}"
    if reason is None:
        return "process"
    logger.info("%s: rendering in a thread, not in a render process (the default), because "
                "%s; define the analysis in an importable module to render in a process",
                name, reason)
    return "thread"


def _notebook_display(settings: Settings) -> Any:
    """One live image in the fit's cell, when in a kernel and not switched off."""
    from autofit_jaxviz.display import NotebookDisplay, in_kernel

    if not settings.notebook_display or not in_kernel():
        return None
    display = NotebookDisplay()
    return display if display.enabled else None


def _hub_for(fitness: Any) -> _Hub | None:
    """The fitness's hub; ``None`` once its fit has ended (autofit still evaluates
    the best fit once after shutting quick updates down: that must not start a
    new worker)."""
    if fitness.__dict__.get("_jaxviz_closed", False):
        return None
    key = fitness._jaxviz_key
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            # an unpickled copy in a new process (a resume): a fresh worker here
            settings = Settings(**fitness._jaxviz_settings)
            hub = _Hub(fitness, settings, cores=1, in_jit=fitness._jaxviz_in_jit)
            _hubs[key] = hub
        return hub


# --------------------------------------------------------------------------- fitness


def _live_fitness_class() -> type:
    cls = globals().get("LiveFitness")
    if cls is None:
        cls = globals()["LiveFitness"] = _build_live_fitness()
    return cls


def _build_live_fitness() -> type:
    from autofit.non_linear.fitness import ITERATIONS_NEVER, Fitness

    class LiveFitness(Fitness):  # type: ignore[misc, valid-type]
        """autofit's ``Fitness`` with its quick updates routed to autofit_jaxviz."""

        def _jaxviz_setup(self, settings: Settings, cores: int, in_jit: bool) -> None:
            self._jaxviz_key = uuid.uuid4().hex
            self._jaxviz_settings = {k: getattr(settings, k) for k in SETTING_KEYS}
            self._jaxviz_settings["sources"] = dict(settings.sources)  # who chose what
            self._jaxviz_in_jit = in_jit
            self._jaxviz_evaluations = 0
            with _hubs_lock:
                _hubs[self._jaxviz_key] = _Hub(self, settings, cores, in_jit)
            if in_jit:
                # the cached objectives were built on autofit's own `call`
                self._objectives = {}
                self._call = self.objective("batched" if self.batched else "scalar")

        def manage_quick_update(self, parameters: Any, log_likelihood: Any) -> None:
            cadence = self.iterations_per_quick_update
            if cadence is None or cadence >= ITERATIONS_NEVER:
                return
            values = np.asarray(log_likelihood, dtype=float)
            if values.ndim:
                count = values.shape[0]
                finite = np.where(np.isfinite(values), values, -np.inf)
                index = int(np.argmax(finite))
                best, best_parameters = finite[index], np.asarray(parameters)[index]
            else:
                count, best, best_parameters = 1, float(values), parameters
            # NaN and infinities never become the best fit
            hub = _hub_for(self)
            if hub is None:
                return
            if np.isfinite(best) and best > self.quick_update_max_lh:
                self.quick_update_max_lh = float(best)
                self.quick_update_max_lh_parameters = np.array(best_parameters, dtype=float)
                hub.improved(self.quick_update_max_lh_parameters, self.quick_update_max_lh)
            self.quick_update_count += count
            self._jaxviz_evaluations = getattr(self, "_jaxviz_evaluations", 0) + count
            if self.quick_update_count >= cadence:
                self.quick_update_count = 0
                if self.quick_update_max_lh_parameters is not None:
                    hub.due(self.quick_update_max_lh_parameters, self.quick_update_max_lh,
                            self._jaxviz_evaluations)

        def call(self, parameters: Any) -> Any:
            figure_of_merit = super().call(parameters)
            if getattr(self, "_jaxviz_in_jit", False):
                _report_in_jit(self, parameters, figure_of_merit)
            return figure_of_merit

        def shutdown_quick_update(self) -> None:
            key = getattr(self, "_jaxviz_key", None)
            hub = _hubs.get(key) if key else None
            self._jaxviz_closed = True
            if hub is not None:
                hub.close(self.quick_update_max_lh_parameters, self.quick_update_max_lh,
                          getattr(self, "_jaxviz_evaluations", 0))
            super().shutdown_quick_update()

    LiveFitness.__module__ = __name__
    LiveFitness.__qualname__ = "LiveFitness"
    return LiveFitness


def _report_in_jit(fitness: Any, parameters: Any, figure_of_merit: Any) -> None:
    """Report ~1 in ``iterations_per_quick_update`` evaluations to the host (jitted searches).

    Traced once: the same gate serves autofit's first evaluation, the warm-up and
    the sampling scan. A smaller thinning factor does not buy images (measured on
    the NUTS case of ``benchmarks/bench_autofit.py``): new best fits come
    in a ~0.1 s burst at the start of the warm-up (a latest-only worker draws
    ~2 of them) plus a handful of tiny records while sampling, so checking every
    evaluation gave 5-8 images vs 4-5 at 1/cadence, for 1.2-1.3x the wall time
    (each callback ~70-80 us, each image ~0.2 s of a 2-core machine).
    """
    import jax.numpy as jnp

    from autofit_jaxviz.callback import report, thinning_gate

    hub = _hub_for(fitness)
    if hub is None or hub.sink is None:
        return
    log_likelihood = figure_of_merit
    if fitness.convert_to_chi_squared:
        log_likelihood = -0.5 * log_likelihood
    if not fitness.fom_is_log_likelihood:
        prior = jnp.sum(jnp.asarray(fitness.model.log_prior_list_from_vector(
            vector=parameters, xp=jnp)))
        log_likelihood = log_likelihood - jnp.where(jnp.isfinite(prior), prior, 0.0)
    every = max(1, int(fitness.iterations_per_quick_update))
    report(hub.sink, parameters, log_likelihood, when=thinning_gate(parameters, every))


def __getattr__(name: str) -> Any:
    # LiveFitness subclasses autofit's Fitness, so it is built on first access:
    # importing this module must not import autofit.
    if name == "LiveFitness":
        return _live_fitness_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "LiveFitness"])


__all__ = ["AutofitRender", "check_autofit", "disable", "enable", "is_enabled"]
