"""``LiveFitness``: autofit's ``Fitness`` with its quick updates routed to this library.

Built on first use (it subclasses autofit's class, and importing this package
must not import autofit). Host-driven searches report through
``manage_quick_update``; jitted searches (BlackJAX NUTS, SMC) report from
inside ``call`` through the stateless in-jit hook, thinned on the device.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from autofit_jaxviz.autofit.hub import Hub, hub_for, hubs, hubs_lock
from autofit_jaxviz.config import SETTING_KEYS, Settings

_built: dict[str, type] = {}


def live_fitness_class() -> type:
    """The ``LiveFitness`` class, built once on first use."""
    if "LiveFitness" not in _built:
        _built["LiveFitness"] = _build_live_fitness()
    return _built["LiveFitness"]


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
            with hubs_lock:
                hubs[self._jaxviz_key] = Hub(self, settings, cores, in_jit)
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
            hub = hub_for(self)
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
            hub = hubs.get(key) if key else None
            self._jaxviz_closed = True
            if hub is not None:
                hub.close(self.quick_update_max_lh_parameters, self.quick_update_max_lh,
                          getattr(self, "_jaxviz_evaluations", 0))
            super().shutdown_quick_update()

    LiveFitness.__module__ = "autofit_jaxviz.autofit"
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

