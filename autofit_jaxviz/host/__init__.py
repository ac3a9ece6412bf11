"""The host side of the in-jit hook (no JAX is called here)."""

from autofit_jaxviz.host.sink import HostSink, SinkStats

__all__ = ["HostSink", "SinkStats"]
