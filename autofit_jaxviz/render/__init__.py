"""The render side: the latest-only worker, its render process, and the pictures it writes."""

from autofit_jaxviz.render.png import write_png_atomically
from autofit_jaxviz.render.worker import QuickUpdateWorker, WorkerStats

__all__ = ["QuickUpdateWorker", "WorkerStats", "write_png_atomically"]
