"""The stateless hook: one call inside a likelihood handed to someone else's sampler."""

from __future__ import annotations

from typing import Any

from autofit_jaxviz.device.batching import emitter, host_callback
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.packing import (
    best_row,
    check_log_likelihood,
    clean_log_likelihood,
    describe_array,
    flatten,
    spec_of,
)
from autofit_jaxviz.host.sink import HostSink


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
    _, jnp, _ = load_jax()
    ll = check_log_likelihood(log_likelihood, "report")
    walkers = ll.shape[0] if ll.ndim == 1 else None
    spec, leaves = spec_of(parameters, walkers, "report")
    flat = flatten(spec, leaves, walkers)
    clean = clean_log_likelihood(ll)
    ok = clean > -jnp.inf
    if when is not None:
        gate = jnp.asarray(when)
        if gate.dtype != jnp.bool_ or gate.shape not in ((), tuple(ll.shape)):
            raise ValueError(
                f"report: when must be a bool scalar or match log_likelihood's shape "
                f"{tuple(ll.shape)}, got {describe_array(gate)}"
            )
        ok = ok & gate
    if walkers is not None:
        score = jnp.where(ok, clean, -jnp.inf)
        best, flat, _ = best_row(score, flat)
        clean, ok = best, best > -jnp.inf
    emit = emitter(host_callback(sink, spec, device_step=False, final=False))
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
    jax, jnp, lax = load_jax()
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

