"""The device side of the in-jit hook: hand the best fit from jitted JAX code to the host.

A fully jitted sampler (NUTS inside one ``lax.scan``, an optax multi-start
loop, a NumPyro run) has no Python between steps, so the only way out is a
host callback. A callback costs ~150-250 us on CPU (plus ~60 us per extra
argument) and a device-to-host sync on a GPU, so this subpackage is about
calling it rarely and with one small array:

* :mod:`~autofit_jaxviz.device.tracker`: :class:`BestFitTracker`, for code
  that owns its loop (the best in the carry, a callback only on improvement);
* :mod:`~autofit_jaxviz.device.report`: :func:`report`, for a likelihood
  handed to someone else's sampler (stateless; :func:`thinning_gate` thins it);
* :mod:`~autofit_jaxviz.device.packing`: the one packed array a best fit
  travels in, and the batch reduction to its best row;
* :mod:`~autofit_jaxviz.device.batching`: the emitter, one callback per batch
  under ``vmap`` and per mesh under ``shard_map``.

The host end is :class:`autofit_jaxviz.host.sink.HostSink`. Nothing here
imports JAX until it is used.
"""

from autofit_jaxviz.device.report import report, thinning_gate
from autofit_jaxviz.device.tracker import BestFitTracker, TrackerState

__all__ = ["BestFitTracker", "TrackerState", "report", "thinning_gate"]
