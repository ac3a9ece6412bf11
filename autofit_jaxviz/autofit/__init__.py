"""Live quick updates for real PyAutoFit searches.

``autofit_jaxviz.autofit.enable()`` switches this library on for every search
built afterwards; ``disable()`` restores autofit exactly. Nothing is patched
until ``enable()`` is called.

How it hooks in (:mod:`.hooks`): every autofit search builds its ``Fitness``
in one place, ``SearchExecutionMixin.make_fitness``. When quick updates are
due for that search (a finite ``iterations_per_quick_update``), the fitness's
class is switched to ``LiveFitness`` (:mod:`.fitness`), which keeps autofit's
cadence and its ``model.results`` text but hands the best *parameter vector*
to the fit's hub (:mod:`.hub`) and its latest-only worker, where the instance
is built and drawn (:mod:`.render`):

* host-driven searches (Emcee, Dynesty, Nautilus, LBFGS, Drawer, MultiStart…)
  report through ``manage_quick_update``, called from Python;
* searches that trace ``Fitness.call`` into one jitted loop (BlackJAX NUTS,
  SMC) get the stateless in-jit hook inside ``call``, thinned on the device so
  only about one evaluation in ``iterations_per_quick_update`` calls the host;
* forked multi-core pools (``number_of_cores > 1``) send each child's best to
  the parent, which renders the global best with its one worker (:mod:`.pool`).

The worker never lives in the fitness's ``__dict__`` (it sits in a registry
keyed by the fitness), so a fitness pickles (Dynesty checkpoints, resumes),
and an unpickled copy in the same process finds the same worker again.
"""

from __future__ import annotations

from typing import Any

from autofit_jaxviz.autofit.hooks import check_autofit, disable, enable, is_enabled
from autofit_jaxviz.autofit.render import AutofitRender


def __getattr__(name: str) -> Any:
    # LiveFitness subclasses autofit's Fitness, so it is built on first access:
    # importing this package must not import autofit.
    if name == "LiveFitness":
        from autofit_jaxviz.autofit.fitness import live_fitness_class

        return live_fitness_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AutofitRender", "LiveFitness", "check_autofit", "disable", "enable", "is_enabled"]
