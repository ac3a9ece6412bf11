"""``LiveFitness``: a fitness with its quick updates routed to this library.

Built on first use, per fitness class (it subclasses the class autofit or a
user's ``make_fitness`` built, and importing this package must not import
autofit). Host-driven searches report through
``manage_quick_update``; jitted searches (BlackJAX NUTS, SMC) report from
inside ``call`` through the stateless in-jit hook, thinned on the device.
"""

from __future__ import annotations

import copyreg
import threading
import uuid
from typing import Any

import numpy as np

from autofit_jaxviz.autofit.hub import Hub, hub_for, hubs, hubs_lock
from autofit_jaxviz.config import Settings

_built: dict[type, type] = {}
_built_lock = threading.Lock()


def live_fitness_class(base: type | None = None) -> type:
    """The live counterpart of the fitness class ``base`` (autofit's ``Fitness``
    by default): a subclass of ``base``, so every method autofit, a search or a
    user's ``make_fitness`` gave it is kept. Built once per class."""
    if base is None:
        from autofit.non_linear.fitness import Fitness

        base = Fitness
    if issubclass(base, LiveFitnessMixin):
        return base
    with _built_lock:
        if base not in _built:
            name = f"Live{base.__name__}"
            _built[base] = type(name, (LiveFitnessMixin, base), {
                "__module__": "autofit_jaxviz.autofit", "__qualname__": name,
                "_jaxviz_base": base, "__doc__": f"{base.__qualname__} with its quick "
                "updates routed to autofit_jaxviz."})
        return _built[base]


def _restore_live_fitness(base: type, *args: Any) -> Any:
    cls = live_fitness_class(base)
    return cls.__new__(cls, *args)


class LiveFitnessMixin:
    """What a live fitness adds to its own class: the quick updates go to this
    library's hub instead of autofit's synchronous (or threaded) update."""

    _jaxviz_base: type

    def __reduce_ex__(self, protocol: Any) -> Any:
        # a class built at run time: pickled as "the live form of <its base>",
        # the base by reference (Dynesty checkpoints, pool workers); the rest
        # (state, slots) as the base pickles it
        reduced = super().__reduce_ex__(protocol)
        if (isinstance(reduced, tuple) and reduced[0] is copyreg.__newobj__
                and reduced[1][0] is type(self)):
            return (_restore_live_fitness, (self._jaxviz_base, *reduced[1][1:]),
                    *reduced[2:])
        return reduced

    def _jaxviz_setup(self, settings: Settings, cores: int, in_jit: bool) -> None:
        self._jaxviz_key = uuid.uuid4().hex
        self._jaxviz_in_jit = in_jit
        self._jaxviz_evaluations = 0
        with hubs_lock:
            hubs[self._jaxviz_key] = Hub(self, settings, cores, in_jit)
        if in_jit:
            # the cached objectives were built on autofit's own `call`
            self._objectives = {}
            self._call = self.objective("batched" if self.batched else "scalar")

    def manage_quick_update(self, parameters: Any, log_likelihood: Any) -> None:
        from autofit.non_linear.fitness import ITERATIONS_NEVER

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
        hub = hub_for(self)
        if hub is None:  # not the process that runs the search: nothing to draw here
            return
        # NaN and infinities never become the best fit
        if np.isfinite(best) and best > self.quick_update_max_lh:
            self.quick_update_max_lh = float(best)
            self.quick_update_max_lh_parameters = np.array(best_parameters, dtype=float)
            hub.improved(self.quick_update_max_lh_parameters, self.quick_update_max_lh)
        self.quick_update_count += count
        self._jaxviz_evaluations = getattr(self, "_jaxviz_evaluations", 0) + count
        # the clock, when set, decides instead of the count (autofit issue #746)
        due = hub.clock_due() if hub.quick_update_seconds else self.quick_update_count >= cadence
        if due:
            self.quick_update_count = 0
            if self.quick_update_max_lh_parameters is not None:
                hub.due(self.quick_update_max_lh_parameters, self.quick_update_max_lh,
                        self._jaxviz_evaluations)

    def call(self, parameters: Any) -> Any:
        figure_of_merit = super().call(parameters)  # type: ignore[misc]
        if getattr(self, "_jaxviz_in_jit", False):
            _report_in_jit(self, parameters, figure_of_merit)
        return figure_of_merit

    def shutdown_quick_update(self) -> None:
        key = getattr(self, "_jaxviz_key", None)
        hub = hubs.get(key) if key else None
        self._jaxviz_closed = True
        if hub is not None:
            hub.close(self.quick_update_max_lh_parameters, self.quick_update_max_lh,
                      getattr(self, "_jaxviz_evaluations", 0))
        super().shutdown_quick_update()  # type: ignore[misc]


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

    from autofit_jaxviz.device.report import report, thinning_gate

    hub = hub_for(fitness)
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

