"""Live quick-update visualization for Bayesian fits, including fully jitted JAX samplers.

Importing this package never imports JAX: the host-side API works on NumPy
alone, and the JAX hook is loaded only when it is used.
"""

from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.worker import QuickUpdateWorker, WorkerStats

__all__ = ["BestFit", "QuickUpdateWorker", "WorkerStats"]
__version__ = "0.1.0"
