"""How a best fit travels from the device: one packed, flat array.

The payload is ``[log_likelihood, step_hi, step_lo, *flattened parameters]``
(the step split in two 16-bit halves so it stays exact in float32): one
transfer, no gradient (it is ``stop_gradient``-ed), and it survives
``grad``/``value_and_grad``/``checkpoint``. Parameter pytrees are flattened on
the device (:class:`ParamSpec` is their static layout) and rebuilt on the host
from it. Batches (a leading walkers axis) are reduced to their best row on the
device, never looped over; non-finite log-likelihoods are -inf there, so they
never become the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autofit_jaxviz.device.lazy_jax import load_jax

#: Leading entries of a packed payload: log_likelihood, step_hi, step_lo.
HEADER = 3
#: The step is sent as ``step // STEP_SPLIT`` and ``step % STEP_SPLIT``.
STEP_SPLIT = 1 << 16


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """Static layout of one walker's parameters: how to flatten and rebuild them."""

    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def describe(self) -> str:
        return ", ".join(
            f"{p or 'parameters'}: {d.name}{list(s)}"
            for p, s, d in zip(self.paths, self.shapes, self.dtypes, strict=True)
        )

    def unflatten_numpy(self, flat: np.ndarray) -> Any:
        """Host side: NumPy leaves (views of ``flat`` where the dtype allows).

        ``PyTreeDef.unflatten`` is a pure pytree operation: it dispatches nothing.
        """
        leaves = []
        offset = 0
        for shape, dtype, size in zip(self.shapes, self.dtypes, self.sizes, strict=True):
            leaves.append(flat[offset : offset + size].reshape(shape).astype(dtype, copy=False))
            offset += size
        return self.treedef.unflatten(leaves)

    def unflatten_jax(self, flat: Any) -> Any:
        """Device side: rebuild the pytree from a flat vector."""
        jax, _, lax = load_jax()
        leaves = []
        offset = 0
        for shape, dtype, size in zip(self.shapes, self.dtypes, self.sizes, strict=True):
            leaf = lax.slice_in_dim(flat, offset, offset + size).reshape(shape)
            leaves.append(leaf.astype(dtype))
            offset += size
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def describe_array(x: Any) -> str:
    dtype = getattr(x, "dtype", type(x).__name__)
    shape = getattr(x, "shape", ())
    return f"{getattr(dtype, 'name', dtype)}{list(shape)}"


def as_leaf(x: Any) -> Any:
    """Keep tracers and ShapeDtypeStructs, turn Python/NumPy values into arrays."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    _, jnp, _ = load_jax()
    return jnp.asarray(x)


def check_log_likelihood(log_likelihood: Any, where: str) -> Any:
    _, jnp, _ = load_jax()
    ll = as_leaf(log_likelihood)
    if not jnp.issubdtype(ll.dtype, jnp.floating):
        raise TypeError(
            f"{where}: log_likelihood must be floating point, got {describe_array(ll)}; "
            "expected a float scalar () or a (walkers,) float vector"
        )
    if len(ll.shape) > 1 or ll.shape == (0,):
        raise ValueError(
            f"{where}: log_likelihood must have shape () for one walker or (walkers,) with "
            f"walkers >= 1 for a batch, got shape {tuple(ll.shape)}"
        )
    return ll


def spec_of(parameters: Any, walkers: int | None, where: str) -> tuple[ParamSpec, list[Any]]:
    """Validate ``parameters`` (one walker, or a batch with a leading ``walkers`` axis)."""
    jax, jnp, _ = load_jax()
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(parameters)
    if not with_paths:
        raise ValueError(f"{where}: parameters has no array leaves, got {parameters!r}")
    paths, leaves, shapes, dtypes = [], [], [], []
    for path, raw in with_paths:
        leaf = as_leaf(raw)
        name = jax.tree_util.keystr(path)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{where}: parameters must be floating point, but leaf "
                f"{name or 'parameters'} is {describe_array(leaf)}; cast it with .astype(float) "
                "(integer parameters cannot be compared or rebuilt exactly)"
            )
        shape = tuple(leaf.shape)
        if walkers is not None:
            if not shape or shape[0] != walkers:
                raise ValueError(
                    f"{where}: log_likelihood has shape ({walkers},), so every parameter leaf "
                    f"needs a leading walkers axis of {walkers}, but leaf {name or 'parameters'}"
                    f" has shape {shape}"
                )
            shape = shape[1:]
        paths.append(name)
        leaves.append(leaf)
        shapes.append(shape)
        dtypes.append(np.dtype(leaf.dtype))
    spec = ParamSpec(treedef, tuple(paths), tuple(shapes), tuple(dtypes))
    return spec, leaves


def flat_dtype(spec: ParamSpec) -> Any:
    _, jnp, _ = load_jax()
    return jnp.result_type(jnp.float32, *spec.dtypes)


def flatten(spec: ParamSpec, leaves: list[Any], walkers: int | None) -> Any:
    """Concatenate the leaves into ``(n,)`` or ``(walkers, n)`` in one float dtype."""
    _, jnp, _ = load_jax()
    dtype = flat_dtype(spec)
    lead = () if walkers is None else (walkers,)
    parts = [jnp.asarray(leaf).astype(dtype).reshape(lead + (-1,)) for leaf in leaves]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def clean_log_likelihood(log_likelihood: Any) -> Any:
    """Non-finite log-likelihoods never become the best: map them to -inf."""
    _, jnp, _ = load_jax()
    return jnp.where(jnp.isfinite(log_likelihood), log_likelihood, -jnp.inf)


def select_row(onehot: Any, x: Any) -> Any:
    """``x[i]`` for a one-hot mask; a masked sum also works on explicitly sharded axes."""
    _, jnp, _ = load_jax()
    mask = onehot.reshape(onehot.shape + (1,) * (x.ndim - 1))
    return jnp.sum(jnp.where(mask, x, jnp.zeros((), x.dtype)), axis=0)


def best_row(ll: Any, flat: Any) -> tuple[Any, Any, Any]:
    """Reduce a batch to (best log-likelihood, best row, one-hot mask) on the device."""
    _, jnp, _ = load_jax()
    clean = clean_log_likelihood(ll)
    onehot = jnp.arange(clean.shape[0]) == jnp.argmax(clean)
    return jnp.max(clean), select_row(onehot, flat), onehot

