"""The one object that travels from a sampler to the renderer.

Every producer (the in-jit hook, a host-driven search, a user's own loop) hands
the worker a :class:`BestFit`, so renderers, the notebook display and the
render process all read the same three facts in the same place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BestFit:
    """The best fit found so far.

    ``parameters`` is whatever the producer fits: a flat NumPy vector, a
    pytree with NumPy leaves, or (only for visualizers that declare
    ``supports_jax_visualization``) JAX arrays.
    """

    log_likelihood: float
    parameters: Any
    step: int
    created: float = field(default_factory=time.monotonic)
