"""Hand the current best fit from jitted JAX code to the host, cheaply enough to leave on.

A fully jitted sampler (NUTS inside one ``lax.scan``, an optax multi-start loop,
a NumPyro run) has no Python between steps, so the only way out is a host
callback. A callback costs ~150-250 us on CPU (plus ~60 us per extra argument)
and a device-to-host sync on a GPU, so this module is about calling it rarely
and with one small array:

:class:`BestFitTracker`
    for code that owns its loop. A small pytree state carried through
    ``scan``/``while_loop``/``fori_loop`` keeps the best fit on the device; the
    host is called (one ``lax.cond`` on a scalar predicate) only when the best
    improved since it was last reported and at most once every ``every`` steps.
    ``report_final`` pushes the last best after the loop, so it is never lost.
    The cost is the callbacks that fire (a few per improvement early on), not
    the per-step bookkeeping: measured on CPU, 1.15x on a ~5 us step with
    ``every=1``, ~1.0x on a 1,000-walker step (``benchmarks/bench_callback.py``).
    For the hottest loops, ``track`` in an inner scan and ``maybe_report`` in
    the outer one keep the cond out of the inner loop.
:func:`report`
    for a likelihood handed to someone else's sampler: one stateless call that
    sends the evaluation to the host, where it is compared with the best so
    far. It is a callback per evaluation (per *batch* under ``vmap``), so it
    costs ~200 us per call; use the tracker in hot loops, or gate it with
    ``when=``.
:class:`HostSink`
    the host side: copy to NumPy, compare with the host best, hand a
    :class:`~autofit_jaxviz.payload.BestFit` to ``target.submit`` (a
    ``QuickUpdateWorker``) or to a plain callable, return.

Why ``jax.debug.callback`` and not ``io_callback(ordered=False)``: measured on
jax 0.11.2, ``debug.callback`` survives ``grad``, ``checkpoint``, ``cond``,
``scan``, ``while_loop`` and ``vmap``, while ``io_callback`` raises under
``grad`` of differentiated inputs and under ``vmap`` of ``cond``. We need no
return value, and the callback is unordered, so the sampler never waits for it
beyond the transfer. ``debug.callback`` hands the host a CPU ``jax.Array``;
``np.asarray`` of it would be a zero-copy view of a buffer XLA owns, so the sink
takes one explicit ``np.array`` copy (a few dozen floats, marked read-only) and
builds NumPy leaves as views of it. The host side dispatches no JAX computation
(it only reads the buffer and unflattens a ``PyTreeDef``); it takes ~3-5 us of
the ~150-250 us a callback costs. Any exception there is caught, counted in
:meth:`HostSink.stats` and logged once, then at most every 100 failures or 60 s:
raising into XLA would abort the sampler.

The payload is one packed, ``stop_gradient``-ed array ``[log_likelihood,
step_hi, step_lo, *flattened parameters]`` (the step split in two 16-bit halves
so it stays exact in float32): one transfer, no gradient, and it survives
``grad``/``value_and_grad``/``checkpoint``. Parameter pytrees are flattened on
the device and rebuilt on the host from the static tree structure.

Batches: parameters ``(walkers, n)`` (or pytrees whose leaves have a leading
walkers axis) with log-likelihoods ``(walkers,)`` are reduced to their best row
on the device (``argmax``), never looped over. The emitter is a
``jax.custom_batching.custom_vmap`` whose batching rule does the same
reduction, so ``report`` inside a vmapped likelihood (or a tracker inside a
vmapped set of chains) calls back once per batch, not once per element, and
the ``lax.cond`` predicate stays a scalar (a batched predicate would turn the
cond into a select that runs the callback every time).

Sharding: under ``jit`` over sharded arrays the reduction is a global one
(XLA inserts the collectives) and ``debug.callback`` runs once, on one device.
Inside ``shard_map`` the tracker keeps one replicated best (a ``pmax``/``psum``
reduction across the manual mesh axes each step) and the emitter calls back
from the first device only; ``report`` does the same reduction per call. With several
processes (``jax.distributed``) only process 0 hands anything on; the others'
sinks return at once (the program stays identical on every process).

Non-finite log-likelihoods (NaN, +inf, -inf) never become the best fit: they
are treated as -inf on the device and rejected on the host. +inf is excluded
too because a single overflow would otherwise freeze the best forever.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autofit_jaxviz.payload import BestFit

if TYPE_CHECKING:
    from types import ModuleType

logger = logging.getLogger(__name__)

__all__ = [
    "BestFitTracker",
    "HostSink",
    "SinkStats",
    "TrackerState",
    "report",
    "thinning_gate",
]

#: After the first traceback, failures are logged at most every this many...
FAILURE_LOG_EVERY = 100
#: ...or this many seconds, whichever comes first.
FAILURE_LOG_SECONDS = 60.0

_HEADER = 3  # log_likelihood, step_hi, step_lo
_STEP_SPLIT = 1 << 16


# --------------------------------------------------------------------------- jax loading


@functools.cache
def _jax() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import JAX on first use, so the package imports without it."""
    try:
        import jax
        import jax.numpy as jnp
        from jax import lax
    except ImportError as exc:  # pragma: no cover - exercised only without jax
        raise ImportError(
            "autofit_jaxviz.callback's in-jit hook (BestFitTracker, report) needs JAX; "
            "install it with `pip install jax` (the host-side HostSink works without it)"
        ) from exc
    jax.tree_util.register_pytree_with_keys(
        TrackerState,
        TrackerState._flatten_with_keys,
        TrackerState._unflatten,
        TrackerState._flatten,
    )
    return jax, jnp, lax


# --------------------------------------------------------------------------- host side


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What a :class:`HostSink` has seen so far."""

    received: int  # callbacks that reached this process's sink
    delivered: int  # best fits handed to the target
    stale: int  # payloads that did not beat the host best (or were not finite)
    held: bool  # a better fit is waiting for ``min_seconds`` to pass
    failed: int  # exceptions caught (target or unpacking), never raised into XLA
    other_process: int  # callbacks ignored because this is not process 0


class HostSink:
    """The host side of the hook: keep the host best, hand improvements to ``target``.

    Parameters
    ----------
    target
        An object with ``submit(payload)`` (a ``QuickUpdateWorker``) or a plain
        callable taking one :class:`BestFit`. It runs on XLA's callback thread
        while the device waits for the callback to return, so it must be fast:
        hand rendering to a worker.
    min_seconds
        Hand on at most one best fit per this many seconds. A better fit that
        arrives sooner is held and handed on with the next callback after the
        interval, by :meth:`flush`, or by the tracker's ``report_final``. (The
        worker's own ``min_interval`` throttles rendering without holding back;
        this only saves ``submit`` calls.)
    name
        Used in log lines.

    The host best persists across runs of a jitted function, so a second fit
    only shows fits better than the first's; call :meth:`reset` between fits.
    """

    def __init__(self, target: Any, *, min_seconds: float = 0.0, name: str = "best-fit") -> None:
        submit = getattr(target, "submit", None)
        if callable(submit):
            self._submit: Callable[[BestFit], Any] = submit
        elif callable(target):
            self._submit = target
        else:
            raise TypeError(
                "target must have a submit(payload) method (e.g. QuickUpdateWorker) or be "
                f"callable with one BestFit, got {type(target).__name__}: {target!r}"
            )
        if (
            isinstance(min_seconds, bool)
            or not isinstance(min_seconds, int | float)
            or not min_seconds >= 0
            or math.isinf(min_seconds)
        ):
            raise ValueError(f"min_seconds must be a finite number >= 0, got {min_seconds!r}")
        self.target = target
        self.name = name
        self._min_seconds = float(min_seconds)
        self._lock = threading.Lock()
        self._reset_locked()
        self._received = 0
        self._delivered = 0
        self._stale = 0
        self._failed = 0
        self._other_process = 0
        self._last_failure_log = float("-inf")
        self._failures_at_last_log = 0

    def _reset_locked(self) -> None:
        self._best_ll = -math.inf
        self._best: BestFit | None = None
        self._held: BestFit | None = None
        self._last_delivery = -math.inf
        self._report_calls = 0

    def reset(self) -> None:
        """Forget the host best (and any held fit), e.g. before a new fit."""
        with self._lock:
            self._reset_locked()

    @property
    def best(self) -> BestFit | None:
        """The best fit accepted so far (delivered or held), or None."""
        return self._best

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(
                received=self._received,
                delivered=self._delivered,
                stale=self._stale,
                held=self._held is not None,
                failed=self._failed,
                other_process=self._other_process,
            )

    def flush(self) -> bool:
        """Hand on a fit held back by ``min_seconds``; True if one was handed on.

        Callbacks run asynchronously: call ``jax.effects_barrier()`` first so
        every callback of a finished computation has arrived.
        """
        with self._lock:
            held, self._held = self._held, None
            if held is None:
                return False
            self._deliver_locked(held)
            return True

    # -- called by XLA ---------------------------------------------------------------

    def _on_device(
        self,
        spec: _ParamSpec,
        device_step: bool,
        final: bool,
        process_index: int,
        packed: Any,
    ) -> None:
        """Receive one packed payload. Never raises: XLA would abort the computation."""
        try:
            if process_index != 0:
                with self._lock:
                    self._other_process += 1
                return
            flat = np.array(packed, copy=True).reshape(-1)  # one copy: XLA owns the buffer
            log_likelihood = float(flat[0])
            with self._lock:
                self._received += 1
                self._report_calls += 1
                if device_step:
                    step = int(flat[1]) * _STEP_SPLIT + int(flat[2])
                else:
                    step = self._report_calls
                self._offer_locked(spec, flat, log_likelihood, step, final)
        except Exception:  # noqa: BLE001 - must not propagate into XLA
            self._failure()

    def _offer_locked(
        self, spec: _ParamSpec, flat: np.ndarray, log_likelihood: float, step: int, final: bool
    ) -> None:
        now = time.monotonic()
        if math.isfinite(log_likelihood) and log_likelihood > self._best_ll:
            flat.flags.writeable = False  # leaves are views of this private copy
            fit = BestFit(
                log_likelihood=log_likelihood,
                parameters=spec.unflatten_numpy(flat[_HEADER:]),
                step=step,
                created=now,
            )
            self._best_ll = log_likelihood
            self._best = fit
            self._held = fit
        else:
            self._stale += 1
        if self._held is not None and (final or now - self._last_delivery >= self._min_seconds):
            held, self._held = self._held, None
            self._deliver_locked(held, now)

    def _deliver_locked(self, fit: BestFit, now: float | None = None) -> None:
        # Inside the lock so deliveries reach the target in the order of their fits.
        self._last_delivery = time.monotonic() if now is None else now
        self._delivered += 1
        self._submit(fit)

    def _failure(self) -> None:
        with self._lock:
            self._failed += 1
            failed = self._failed
        now = time.monotonic()
        if failed == 1:
            logger.exception(
                "%s: host callback failed (further failures are summarised)", self.name
            )
        elif (
            failed - self._failures_at_last_log >= FAILURE_LOG_EVERY
            or now - self._last_failure_log >= FAILURE_LOG_SECONDS
        ):
            logger.warning("%s: %d host callback failures so far", self.name, failed)
        else:
            return
        self._last_failure_log = now
        self._failures_at_last_log = failed

    def __repr__(self) -> str:
        best = None if self._best is None else self._best.log_likelihood
        return f"HostSink(name={self.name!r}, best={best!r}, target={self.target!r})"


# --------------------------------------------------------------------------- parameter layout


@dataclass(frozen=True, slots=True)
class _ParamSpec:
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
        jax, _, lax = _jax()
        leaves = []
        offset = 0
        for shape, dtype, size in zip(self.shapes, self.dtypes, self.sizes, strict=True):
            leaf = lax.slice_in_dim(flat, offset, offset + size).reshape(shape)
            leaves.append(leaf.astype(dtype))
            offset += size
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _describe(x: Any) -> str:
    dtype = getattr(x, "dtype", type(x).__name__)
    shape = getattr(x, "shape", ())
    return f"{getattr(dtype, 'name', dtype)}{list(shape)}"


def _as_leaf(x: Any) -> Any:
    """Keep tracers and ShapeDtypeStructs, turn Python/NumPy values into arrays."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    _, jnp, _ = _jax()
    return jnp.asarray(x)


def _check_log_likelihood(log_likelihood: Any, where: str) -> Any:
    _, jnp, _ = _jax()
    ll = _as_leaf(log_likelihood)
    if not jnp.issubdtype(ll.dtype, jnp.floating):
        raise TypeError(
            f"{where}: log_likelihood must be floating point, got {_describe(ll)}; "
            "expected a float scalar () or a (walkers,) float vector"
        )
    if len(ll.shape) > 1 or ll.shape == (0,):
        raise ValueError(
            f"{where}: log_likelihood must have shape () for one walker or (walkers,) with "
            f"walkers >= 1 for a batch, got shape {tuple(ll.shape)}"
        )
    return ll


def _spec_of(parameters: Any, walkers: int | None, where: str) -> tuple[_ParamSpec, list[Any]]:
    """Validate ``parameters`` (one walker, or a batch with a leading ``walkers`` axis)."""
    jax, jnp, _ = _jax()
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(parameters)
    if not with_paths:
        raise ValueError(f"{where}: parameters has no array leaves, got {parameters!r}")
    paths, leaves, shapes, dtypes = [], [], [], []
    for path, raw in with_paths:
        leaf = _as_leaf(raw)
        name = jax.tree_util.keystr(path)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{where}: parameters must be floating point, but leaf "
                f"{name or 'parameters'} is {_describe(leaf)}; cast it with .astype(float) "
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
    spec = _ParamSpec(treedef, tuple(paths), tuple(shapes), tuple(dtypes))
    return spec, leaves


def _flat_dtype(spec: _ParamSpec) -> Any:
    _, jnp, _ = _jax()
    return jnp.result_type(jnp.float32, *spec.dtypes)


def _flatten(spec: _ParamSpec, leaves: list[Any], walkers: int | None) -> Any:
    """Concatenate the leaves into ``(n,)`` or ``(walkers, n)`` in one float dtype."""
    _, jnp, _ = _jax()
    dtype = _flat_dtype(spec)
    lead = () if walkers is None else (walkers,)
    parts = [jnp.asarray(leaf).astype(dtype).reshape(lead + (-1,)) for leaf in leaves]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _clean(log_likelihood: Any) -> Any:
    """Non-finite log-likelihoods never become the best: map them to -inf."""
    _, jnp, _ = _jax()
    return jnp.where(jnp.isfinite(log_likelihood), log_likelihood, -jnp.inf)


def _select_row(onehot: Any, x: Any) -> Any:
    """``x[i]`` for a one-hot mask; a masked sum also works on explicitly sharded axes."""
    _, jnp, _ = _jax()
    mask = onehot.reshape(onehot.shape + (1,) * (x.ndim - 1))
    return jnp.sum(jnp.where(mask, x, jnp.zeros((), x.dtype)), axis=0)


def _best_row(ll: Any, flat: Any) -> tuple[Any, Any, Any]:
    """Reduce a batch to (best log-likelihood, best row, one-hot mask) on the device."""
    _, jnp, _ = _jax()
    clean = _clean(ll)
    onehot = jnp.arange(clean.shape[0]) == jnp.argmax(clean)
    return jnp.max(clean), _select_row(onehot, flat), onehot


# --------------------------------------------------------------------------- the emitter


def _manual_axes(x: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    """Manual (shard_map) mesh axes around ``x`` and the ones it varies over."""
    jax, _, _ = _jax()
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
    _, _, lax = _jax()
    missing = tuple(a for a in axes if a not in _manual_axes(x)[1])
    return lax.pcast(x, missing, to="varying") if missing else x


def _reduce_axes(*xs: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(manual mesh axes around ``xs``, the axes to reduce them over) at trace time.

    Outside ``shard_map`` both are empty. With ``check_vma=True`` only the axes
    the values vary over need a collective (none if they are replicated); with
    ``check_vma=False`` nothing is marked varying, so every manual axis is used.
    """
    _, _, lax = _jax()
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


def _global_best(
    pred: Any, ll: Any, step: Any, flat: Any, axes: tuple[str, ...]
) -> tuple[Any, Any, Any, Any]:
    """Across shard_map devices: the payload of the best device whose ``pred`` holds.

    Afterwards every device holds the same (replicated) values.
    """
    _, jnp, lax = _jax()
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
    _, _, lax = _jax()
    manual, axes = _reduce_axes(pred, ll, step, flat)
    if not manual:
        return pred, ll, step, flat
    pred, ll, step, flat = _global_best(pred, ll, step, flat, axes)
    return pred & (lax.axis_index(manual) == 0), ll, step, flat


def _emitter(host: Callable[[Any], None]) -> Callable[[Any, Any, Any, Any], None]:
    """Build ``emit(pred, log_likelihood, step, flat)`` calling ``host(packed)`` once.

    A ``custom_vmap``: under ``vmap`` the batching rule keeps the best row among
    those whose ``pred`` is true and calls the unbatched emitter once, so the
    callback never unrolls per element and its cond predicate stays a scalar.
    """
    jax, jnp, lax = _jax()

    def _send(ll: Any, step: Any, flat: Any) -> None:
        dtype = jnp.result_type(flat.dtype, ll.dtype)
        header = jnp.stack(
            [
                ll.astype(dtype),
                (step // _STEP_SPLIT).astype(dtype),
                (step % _STEP_SPLIT).astype(dtype),
            ]
        )
        jax.debug.callback(host, jnp.concatenate([header, flat.astype(dtype)]))

    @jax.custom_batching.custom_vmap
    def emit(pred: Any, ll: Any, step: Any, flat: Any) -> Any:
        pred, ll, step, flat = _across_devices(pred, ll, step, flat)
        lax.cond(pred, _send, lambda *_: None, ll, step, flat)
        return pred

    @emit.def_vmap
    def _rule(
        axis_size: int, in_batched: list[bool], pred: Any, ll: Any, step: Any, flat: Any
    ) -> tuple[Any, bool]:
        args = []
        for x, batched in zip((pred, ll, step, flat), in_batched, strict=True):
            args.append(x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape))
        pred, ll, step, flat = args
        score = jnp.where(pred, _clean(ll), -jnp.inf)
        onehot = jnp.arange(axis_size) == jnp.argmax(score)
        out = emit(
            jnp.any(pred & (score > -jnp.inf)),
            _select_row(onehot, ll),
            _select_row(onehot, step),
            _select_row(onehot, flat),
        )
        return jnp.broadcast_to(out, (axis_size,)), True

    def call(pred: Any, ll: Any, step: Any, flat: Any) -> None:
        sg = lax.stop_gradient
        emit(pred, sg(ll), step, sg(flat))

    return call


def _host_fn(sink: HostSink, spec: _ParamSpec, *, device_step: bool, final: bool) -> Any:
    jax, _, _ = _jax()
    return functools.partial(sink._on_device, spec, device_step, final, jax.process_index())


def _is_tracer(x: Any) -> bool:
    jax, _, _ = _jax()
    return isinstance(x, jax.core.Tracer)


# --------------------------------------------------------------------------- stateless hook


def report(
    sink: HostSink,
    parameters: Any,
    log_likelihood: Any,
    *,
    when: Any = None,
) -> None:
    """Send one evaluation to the host, which keeps it if it beats the host best.

    Call it inside a likelihood handed to someone else's sampler. ``parameters``
    is one walker's pytree with a scalar ``log_likelihood``, or a batch with a
    leading walkers axis and a ``(walkers,)`` ``log_likelihood`` (reduced to its
    best row on the device). Under ``vmap`` it calls back once per batch.

    It is stateless, so the device cannot know the host best: every call (every
    batch) with a finite log-likelihood is a callback, ~150-250 us on CPU and a
    sync on a GPU. ``when`` (a scalar or per-walker bool, traced) skips the
    callback where false; use it with whatever state the caller has, e.g.
    ``when=ll > threshold``. For hot loops you own, use :class:`BestFitTracker`.

    ``BestFit.step`` is the host's count of callbacks received by ``sink``.
    """
    if not isinstance(sink, HostSink):
        raise TypeError(
            "report(sink, ...) needs a HostSink created once outside the likelihood, e.g. "
            f"sink = HostSink(worker); got {type(sink).__name__}: {sink!r}"
        )
    _, jnp, _ = _jax()
    ll = _check_log_likelihood(log_likelihood, "report")
    walkers = ll.shape[0] if ll.ndim == 1 else None
    spec, leaves = _spec_of(parameters, walkers, "report")
    flat = _flatten(spec, leaves, walkers)
    clean = _clean(ll)
    ok = clean > -jnp.inf
    if when is not None:
        gate = jnp.asarray(when)
        if gate.dtype != jnp.bool_ or gate.shape not in ((), tuple(ll.shape)):
            raise ValueError(
                f"report: when must be a bool scalar or match log_likelihood's shape "
                f"{tuple(ll.shape)}, got {_describe(gate)}"
            )
        ok = ok & gate
    if walkers is not None:
        score = jnp.where(ok, clean, -jnp.inf)
        best, flat, _ = _best_row(score, flat)
        clean, ok = best, best > -jnp.inf
    emit = _emitter(_host_fn(sink, spec, device_step=False, final=False))
    emit(ok, clean, jnp.zeros((), jnp.int32), flat)


def thinning_gate(parameters: Any, every: int) -> Any:
    """A stateless, traced bool that is true for about one call in ``every``.

    For :func:`report` inside a likelihood someone else's sampler evaluates
    many times per step (NUTS: every leapfrog step): without state there is no
    counter, so the gate hashes the bits of the parameters instead. A sampler
    proposes new points all the time, so which evaluations pass is effectively
    random, and the callbacks drop by a factor of ``every``. Under ``vmap`` the
    gate is per walker; ``report`` still calls back at most once per batch.
    """
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"thinning_gate: every must be a positive int, got {every!r}")
    jax, jnp, lax = _jax()
    if every == 1:
        return jnp.bool_(True)
    every = min(every, 2**32 - 1)  # the digest is a uint32; beyond that "almost never" holds
    leaves = [jnp.ravel(lax.stop_gradient(leaf)) for leaf in jax.tree_util.tree_leaves(parameters)]
    if not leaves:
        raise ValueError("thinning_gate: parameters has no array leaves")
    flat = jnp.concatenate([leaf.astype(jnp.float32) for leaf in leaves])
    bits = lax.bitcast_convert_type(flat, jnp.uint32)
    # mix the bits (a multiplicative hash) so nearby points land in different buckets
    mixed = jnp.bitwise_xor(bits, bits >> 16) * jnp.uint32(0x45D9F3B)
    mixed = jnp.bitwise_xor(mixed, mixed >> 16)
    digest = jnp.sum(mixed * jnp.arange(1, flat.shape[0] + 1, dtype=jnp.uint32))
    return (digest % jnp.uint32(every)) == 0


# --------------------------------------------------------------------------- the tracker


class TrackerState:
    """The carry of :class:`BestFitTracker`: a pytree of a few scalars and one vector.

    ``best_parameters`` is flat; :meth:`BestFitTracker.best_parameters` rebuilds
    the pytree. The parameter layout is static (pytree aux data), so ``scan``
    and ``while_loop`` check it like any other structure.
    """

    __slots__ = (
        "best_log_likelihood",
        "best_parameters",
        "best_step",
        "step",
        "reported_log_likelihood",
        "last_report_step",
        "spec",
    )
    _FIELDS = __slots__[:-1]

    def __init__(
        self,
        best_log_likelihood: Any,
        best_parameters: Any,
        best_step: Any,
        step: Any,
        reported_log_likelihood: Any,
        last_report_step: Any,
        spec: _ParamSpec,
    ) -> None:
        self.best_log_likelihood = best_log_likelihood
        self.best_parameters = best_parameters
        self.best_step = best_step
        self.step = step
        self.reported_log_likelihood = reported_log_likelihood
        self.last_report_step = last_report_step
        self.spec = spec

    def _replace(self, **changes: Any) -> TrackerState:
        values = {f: getattr(self, f) for f in self.__slots__}
        values.update(changes)
        return TrackerState(**values)

    def _flatten(self) -> tuple[tuple[Any, ...], _ParamSpec]:
        return tuple(getattr(self, f) for f in self._FIELDS), self.spec

    def _flatten_with_keys(self) -> tuple[tuple[tuple[Any, Any], ...], _ParamSpec]:
        jax, _, _ = _jax()
        key = jax.tree_util.GetAttrKey
        return tuple((key(f), getattr(self, f)) for f in self._FIELDS), self.spec

    @classmethod
    def _unflatten(cls, spec: _ParamSpec, children: Any) -> TrackerState:
        return cls(*children, spec)

    def __repr__(self) -> str:
        return (
            f"TrackerState(best_log_likelihood={self.best_log_likelihood!r}, "
            f"best_step={self.best_step!r}, step={self.step!r}, "
            f"parameters=[{self.spec.describe()}])"
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class BestFitTracker:
    """Keep the best fit in the loop carry; call the host only when it improved.

    Use inside any jitted loop you own::

        tracker = BestFitTracker(worker, every=100)
        state = tracker.init(example_parameters)
        def step(carry, key):
            ..., params, ll = sampler_step(...)
            return (..., tracker.update(carry_state, params, ll)), None
        ... = lax.scan(step, ...)
        tracker.report_final(state)

    Parameters
    ----------
    target
        A :class:`HostSink`, or anything a ``HostSink`` accepts (an object with
        ``submit`` or a callable), which is wrapped in one.
    every
        Call the host at most once per this many updates. An improvement made
        on a step that may not report is reported at the next step that may.
    check_every
        Let only every ``check_every``-th update report (the best is still
        tracked on every update). This thins out callbacks; the ``lax.cond``
        itself is still in every step. To take it out of the hot loop entirely
        (on a GPU a cond predicate can cost a device-to-host sync), call
        :meth:`track` in an inner ``scan`` and :meth:`maybe_report` once per
        outer iteration.
    min_seconds
        Host-side rate limit, passed to the ``HostSink`` (ignored if ``target``
        already is one).

    ``BestFit.step`` is the 0-based index of the update that found the fit.
    Do not vmap the tracker over walkers: pass the batch (``(walkers, n)``
    parameters, ``(walkers,)`` log-likelihoods). Vmapping whole chains (one
    state per chain) works and still calls back at most once per step.
    """

    def __init__(
        self,
        target: Any,
        *,
        every: int = 1,
        check_every: int = 1,
        min_seconds: float = 0.0,
    ) -> None:
        self.every = _positive_int("every", every)
        self.check_every = _positive_int("check_every", check_every)
        self.sink = (
            target if isinstance(target, HostSink) else HostSink(target, min_seconds=min_seconds)
        )

    def init(self, parameters: Any, log_likelihood: Any = None) -> TrackerState:
        """A fresh state for parameters shaped like ``parameters``.

        ``parameters`` is one walker's pytree (arrays or ``jax.ShapeDtypeStruct``).
        With ``log_likelihood`` (scalar, or ``(walkers,)`` for a batch) the state
        starts from that fit, reported by the first ``update``.
        """
        _, jnp, _ = _jax()
        if log_likelihood is None:
            spec, _ = _spec_of(parameters, None, "BestFitTracker.init")
            ll_dtype = _flat_dtype(spec)
            flat = jnp.zeros((spec.size,), _flat_dtype(spec))
            best = jnp.asarray(-jnp.inf, ll_dtype)
        else:
            ll = _check_log_likelihood(log_likelihood, "BestFitTracker.init")
            walkers = ll.shape[0] if ll.ndim == 1 else None
            spec, leaves = _spec_of(parameters, walkers, "BestFitTracker.init")
            flat = _flatten(spec, leaves, walkers)
            if walkers is None:
                best = _clean(jnp.asarray(ll))
            else:
                best, flat, _ = _best_row(jnp.asarray(ll), flat)
        neg = jnp.asarray(-jnp.inf, best.dtype)
        zero = jnp.zeros((), jnp.int32)
        return TrackerState(
            best_log_likelihood=best,
            best_parameters=flat,
            best_step=zero,
            step=zero,
            reported_log_likelihood=neg,
            last_report_step=jnp.asarray(-self.every, jnp.int32),
            spec=spec,
        )

    def update(self, state: TrackerState, parameters: Any, log_likelihood: Any) -> TrackerState:
        """Fold one step's walker (or batch) into the best and report it if due."""
        state = self.track(state, parameters, log_likelihood)
        return self._maybe_report(state, state.step - 1)

    def track(self, state: TrackerState, parameters: Any, log_likelihood: Any) -> TrackerState:
        """Fold a step into the best without any host contact (no ``lax.cond``).

        Combine with :meth:`maybe_report` to report from an outer loop only, so an
        inner loop carries no callback at all.
        """
        _, jnp, _ = _jax()
        if not isinstance(state, TrackerState):
            raise TypeError(
                f"state must be the TrackerState from BestFitTracker.init, got {type(state)}"
            )
        ll = _check_log_likelihood(log_likelihood, "BestFitTracker.update")
        walkers = ll.shape[0] if ll.ndim == 1 else None
        spec, leaves = _spec_of(parameters, walkers, "BestFitTracker.update")
        if spec != state.spec:
            raise ValueError(
                "BestFitTracker.update: parameters do not match the layout given to init; "
                f"expected one walker as [{state.spec.describe()}], got [{spec.describe()}]"
                + ("" if walkers is None else f" (after removing the walkers axis {walkers})")
            )
        flat = _flatten(spec, leaves, walkers)
        if walkers is None:
            cand = _clean(ll)
        else:
            cand, flat, _ = _best_row(ll, flat)
        _, axes = _reduce_axes(cand, flat)
        if axes:  # inside shard_map: keep one replicated best for the whole mesh
            _, cand, _, flat = _global_best(cand > -jnp.inf, cand, state.step, flat, axes)
        cand = cand.astype(state.best_log_likelihood.dtype)
        better = cand > state.best_log_likelihood
        return state._replace(
            best_log_likelihood=jnp.where(better, cand, state.best_log_likelihood),
            best_parameters=jnp.where(
                better, flat.astype(state.best_parameters.dtype), state.best_parameters
            ),
            best_step=jnp.where(better, state.step, state.best_step),
            step=state.step + 1,
        )

    def maybe_report(self, state: TrackerState) -> TrackerState:
        """Report the best if it improved since the last report and the cadence allows."""
        return self._maybe_report(state, state.step)

    def _maybe_report(self, state: TrackerState, step: Any) -> TrackerState:
        _, jnp, _ = _jax()
        pred = (state.best_log_likelihood > state.reported_log_likelihood) & (
            step - state.last_report_step >= self.every
        )
        if self.check_every > 1:
            pred = pred & ((step + 1) % self.check_every == 0)
        emit = _emitter(_host_fn(self.sink, state.spec, device_step=True, final=False))
        emit(pred, state.best_log_likelihood, state.best_step, state.best_parameters)
        return state._replace(
            reported_log_likelihood=jnp.where(
                pred, state.best_log_likelihood, state.reported_log_likelihood
            ),
            last_report_step=jnp.where(pred, step, state.last_report_step),
        )

    def report_final(self, state: TrackerState) -> TrackerState:
        """Push the best after the loop, bypassing ``every``, ``check_every`` and ``min_seconds``.

        Inside ``jit`` it is one more callback. Outside (a concrete state) it calls
        the sink directly, so the final best has been handed on when it returns.
        """
        _, jnp, _ = _jax()
        host = _host_fn(self.sink, state.spec, device_step=True, final=True)
        if not any(_is_tracer(x) for x in (state.best_log_likelihood, state.best_parameters)):
            ll = np.asarray(state.best_log_likelihood)
            if ll.ndim:
                raise ValueError(
                    "report_final: got a batch of tracker states (best_log_likelihood shape "
                    f"{ll.shape}); call it on one state, or inside the vmapped function"
                )
            step = int(np.asarray(state.best_step))
            flat = np.asarray(state.best_parameters)
            dtype = np.result_type(flat.dtype, ll.dtype)
            header = np.array([ll, step // _STEP_SPLIT, step % _STEP_SPLIT], dtype)
            host(np.concatenate([header, flat.astype(dtype)]))
        else:
            pred = state.best_log_likelihood > -jnp.inf
            _emitter(host)(pred, state.best_log_likelihood, state.best_step, state.best_parameters)
        return state._replace(
            reported_log_likelihood=state.best_log_likelihood,
            last_report_step=state.step,
        )

    def best_parameters(self, state: TrackerState) -> Any:
        """The best parameters as the pytree given to ``init`` (on the device)."""
        return state.spec.unflatten_jax(state.best_parameters)

    def __repr__(self) -> str:
        return (
            f"BestFitTracker(every={self.every}, check_every={self.check_every}, "
            f"sink={self.sink!r})"
        )
