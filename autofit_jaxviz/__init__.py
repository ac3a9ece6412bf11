"""Live quick-update visualization for Bayesian fits, including fully jitted JAX samplers.

The path of a best fit, by subpackage: :mod:`~autofit_jaxviz.device` (inside
jitted code: track, reduce, pack, call back) -> :mod:`~autofit_jaxviz.host`
(the sink on the host) -> :mod:`~autofit_jaxviz.render` (the latest-only
worker, its render process, the PNG) -> :mod:`~autofit_jaxviz.notebook` (one
image in the fit's cell). :mod:`autofit_jaxviz.autofit` plugs it into
PyAutoFit's searches.

Importing this package never imports JAX: the host-side API works on NumPy
alone, and the JAX hook loads JAX only when it is used.
"""

from autofit_jaxviz.device import BestFitTracker, TrackerState, report, thinning_gate
from autofit_jaxviz.host import HostSink, SinkStats
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render import QuickUpdateWorker, WorkerStats, write_png_atomically

__all__ = [
    "BestFit",
    "BestFitTracker",
    "HostSink",
    "QuickUpdateWorker",
    "SinkStats",
    "TrackerState",
    "WorkerStats",
    "report",
    "thinning_gate",
    "write_png_atomically",
]
__version__ = "0.1.0"
