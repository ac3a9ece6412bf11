"""The emitter: at most one host callback per batch, per mesh, per step.

``jax.debug.callback`` rather than ``io_callback(ordered=False)``: measured on
jax 0.11.2, ``debug.callback`` survives ``grad``, ``checkpoint``, ``cond``,
``scan``, ``while_loop`` and ``vmap``, while ``io_callback`` raises under
``grad`` of differentiated inputs and under ``vmap`` of ``cond``. No return
value is needed, and the callback is unordered, so the sampler never waits for
it beyond the transfer.

Batching: the emitter is a ``jax.custom_batching.custom_vmap`` whose batching
rule keeps the best row, so ``report`` inside a vmapped likelihood (or a
tracker inside vmapped chains) calls back once per batch, not once per
element, and the ``lax.cond`` predicate stays a scalar (a batched predicate
would turn the cond into a select that runs the callback every time).

Sharding: under ``jit`` over sharded arrays the reduction is a global one (XLA
inserts the collectives) and the callback runs once, on one device. Inside
``shard_map`` the best is reduced across the manual mesh axes (``pmax`` /
``psum``) and the first device alone calls back. With several processes
(``jax.distributed``) only process 0's sink hands anything on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.packing import STEP_SPLIT, ParamSpec, clean_log_likelihood, select_row

if TYPE_CHECKING:
    from autofit_jaxviz.host.sink import HostSink


def _manual_axes(x: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    """Manual (shard_map) mesh axes around ``x`` and the ones it varies over."""
    jax, _, _ = load_jax()
    aval = jax.typeof(x)
    mesh = getattr(getattr(aval, "sharding", None), "mesh", None)
    if mesh is None:
        return (), frozenset()
    manual_type = getattr(jax.sharding.AxisType, "Manual", None)
    names = tuple(
        n
        for n, t in zip(mesh.axis_names, getattr(mesh, "axis_types", ()), strict=False)
        if t == manual_type
    )
    mat = getattr(aval, "manual_axis_type", None)
    varying = frozenset(getattr(mat, "varying", ()) or ())
    return names, varying


def _vary(x: Any, axes: tuple[str, ...]) -> Any:
    _, _, lax = load_jax()
    missing = tuple(a for a in axes if a not in _manual_axes(x)[1])
    return lax.pcast(x, missing, to="varying") if missing else x


def reduce_axes(*xs: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(manual mesh axes around ``xs``, the axes to reduce them over) at trace time.

    Outside ``shard_map`` both are empty. With ``check_vma=True`` only the axes
    the values vary over need a collective (none if they are replicated); with
    ``check_vma=False`` nothing is marked varying, so every manual axis is used.
    """
    _, _, lax = load_jax()
    manual: tuple[str, ...] = ()
    varying: frozenset[str] = frozenset()
    for x in xs:
        names, vary = _manual_axes(x)
        manual = manual or names
        varying |= vary
    if not manual:
        return (), ()
    vma_checked = bool(_manual_axes(lax.axis_index(manual))[1])
    if not vma_checked:
        return manual, manual
    return manual, tuple(a for a in manual if a in varying)


def global_best(
    pred: Any, ll: Any, step: Any, flat: Any, axes: tuple[str, ...]
) -> tuple[Any, Any, Any, Any]:
    """Across shard_map devices: the payload of the best device whose ``pred`` holds.

    Afterwards every device holds the same (replicated) values.
    """
    _, jnp, lax = load_jax()
    if not axes:
        return pred, ll, step, flat
    pred, ll, step, flat = (_vary(x, axes) for x in (pred, ll, step, flat))
    score = jnp.where(pred, ll, -jnp.inf)
    best = lax.pmax(score, axes)
    me = lax.axis_index(axes)
    owner = lax.pmin(jnp.where(pred & (score == best), me, jnp.iinfo(jnp.int32).max), axes)
    mine = me == owner
    any_pred = lax.pmax(pred.astype(jnp.int32), axes) > 0
    ll = best  # exact, and -inf when no device's pred holds
    step = lax.psum(jnp.where(mine, step, jnp.zeros((), step.dtype)), axes)
    flat = lax.psum(jnp.where(mine, flat, jnp.zeros((), flat.dtype)), axes)
    return any_pred, ll, step, flat


def _across_devices(pred: Any, ll: Any, step: Any, flat: Any) -> tuple[Any, ...]:
    """Inside shard_map: reduce to the best device's payload and let device 0 alone call."""
    _, _, lax = load_jax()
    manual, axes = reduce_axes(pred, ll, step, flat)
    if not manual:
        return pred, ll, step, flat
    pred, ll, step, flat = global_best(pred, ll, step, flat, axes)
    return pred & (lax.axis_index(manual) == 0), ll, step, flat


def pack_payload(ll: Any, step: Any, flat: Any) -> Any:
    """One array for the host (traced): log likelihood, the step in two parts
    (exact in float32), then the flat parameters."""
    jnp = load_jax()[1]
    dtype = jnp.result_type(flat.dtype, ll.dtype)
    header = jnp.stack(
        [ll.astype(dtype), (step // STEP_SPLIT).astype(dtype), (step % STEP_SPLIT).astype(dtype)])
    return jnp.concatenate([header, flat.astype(dtype)])


def emitter(
    host: Callable[[Any], None], prepare: Callable[[Any], Any] | None = None
) -> Callable[..., None]:
    """Build ``emit(pred, log_likelihood, step, flat, floor=None)`` calling ``host(packed)`` once.

    A ``custom_vmap``: under ``vmap`` the batching rule keeps the best row among
    those whose ``pred`` is true and calls the unbatched emitter once, so the
    callback never unrolls per element and its cond predicate stays a scalar.
    ``prepare(flat) -> flat`` runs inside the taken branch only, just before the
    callback (e.g. a sampler's map to constrained space): a step that does not
    report never pays for it.

    ``floor`` (a tracker's ``reported_log_likelihood``): under ``vmap`` the best
    row is sent only if it beats the best any row has reported. A row that beat
    its own last report but not another row's is stale on the host: a
    multi-start optimisation's poor starts keep improving long after the best
    one has converged.
    """
    jax, jnp, lax = load_jax()

    def _send(ll: Any, step: Any, flat: Any) -> None:
        jax.debug.callback(host, pack_payload(ll, step, flat if prepare is None else prepare(flat)))

    @jax.custom_batching.custom_vmap
    def emit(pred: Any, ll: Any, step: Any, flat: Any, floor: Any) -> Any:
        pred, ll, step, flat = _across_devices(pred, ll, step, flat)
        lax.cond(pred, _send, lambda *_: None, ll, step, flat)
        return pred

    @emit.def_vmap
    def _rule(
        axis_size: int, in_batched: list[bool], pred: Any, ll: Any, step: Any, flat: Any,
        floor: Any,
    ) -> tuple[Any, bool]:
        args = []
        for x, batched in zip((pred, ll, step, flat, floor), in_batched, strict=True):
            args.append(x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape))
        pred, ll, step, flat, floor = args
        valid = pred & (clean_log_likelihood(ll) > -jnp.inf)
        score = jnp.where(valid, clean_log_likelihood(ll), -jnp.inf)
        reported = jnp.max(floor)  # the best any row has reported: what the host has
        due = jnp.any(valid) & (jnp.max(score) > reported)

        def reduce_and_emit(ll: Any, step: Any, flat: Any) -> None:
            # only on a step that reports: the best row is found and sent
            onehot = jnp.arange(axis_size) == jnp.argmax(score)
            emit(due, select_row(onehot, ll), select_row(onehot, step),
                 select_row(onehot, flat), reported)

        if reduce_axes(valid, ll, step, flat)[0]:
            # inside shard_map the emitter reduces across devices (collectives):
            # every device must run it, whether or not it has a row to send
            reduce_and_emit(ll, step, flat)
        else:
            lax.cond(due, reduce_and_emit, lambda *_: None, ll, step, flat)
        return jnp.broadcast_to(due, (axis_size,)), True

    def call(pred: Any, ll: Any, step: Any, flat: Any, floor: Any = None) -> None:
        sg = lax.stop_gradient
        if floor is None:
            floor = jnp.asarray(-jnp.inf, jnp.asarray(ll).dtype)
        emit(pred, sg(ll), step, sg(flat), sg(floor))

    return call


def host_callback(sink: HostSink, spec: ParamSpec, *, device_step: bool, final: bool) -> Any:
    jax, _, _ = load_jax()
    return functools.partial(sink._on_device, spec, device_step, final, jax.process_index())


def is_tracer(x: Any) -> bool:
    jax, _, _ = load_jax()
    return isinstance(x, jax.core.Tracer)

