"""Live quick-update visualization for Bayesian fits, including fully jitted JAX samplers.

Importing this package never imports JAX: the host-side API works on NumPy
alone, and the JAX hook loads JAX only when it is used.
"""

from autofit_jaxviz.callback import BestFitTracker, HostSink, SinkStats, TrackerState, report
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.worker import QuickUpdateWorker, WorkerStats

__all__ = [
    "BestFit",
    "BestFitTracker",
    "HostSink",
    "QuickUpdateWorker",
    "SinkStats",
    "TrackerState",
    "WorkerStats",
    "report",
]
__version__ = "0.1.0"
