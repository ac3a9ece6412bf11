"""A jitted loop run in chunks, its best read by the host between them: no callback in the loop.

On XLA's CPU runtime a loop with a host callback in its body, even one that
never fires, often runs with a second Eigen thread busy for the whole loop
(``benchmarks/probe_callback_threads.py``; it happens to plain loops too, less
often). :func:`run_in_chunks` keeps the
loop free of callbacks: one compiled ``while_loop`` runs steps ``start`` to
``stop`` and writes each step's output into a history preallocated for the
whole run, so every chunk, whatever its length, is the same program. After a
chunk the host reads one small summary (the packed best) and hands it on;
it reads one chunk late, so the next chunk is already queued while it reads
(and a host slower than a chunk makes the next chunks longer). Chunk lengths
adapt to take about ``chunk_seconds`` each (starting from one step, growing at
most fourfold per chunk); the steps'
keys are fixed before the first chunk, so the samples do not depend on where
the chunks fall.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.tracker import _positive_int

#: the length of the first two chunks: the second is queued before the first's time is known
FIRST_CHUNK = 1
#: a chunk at most this many times the last one's length, so one quick interval cannot make
#: a huge chunk (and a growing chunk length reaches chunk_seconds in a few chunks)
GROWTH = 4
#: a read that waited less than this did not wait: its chunk had finished before the host asked
NO_WAIT = 1e-3
#: chunk_seconds when neither it nor chunk_steps is given
CHUNK_SECONDS = 0.5


def chunk_plan(chunk_steps: Any, chunk_seconds: Any) -> tuple[int | None, float]:
    """``chunk_steps`` (fixed) or ``chunk_seconds`` (adaptive, default 0.5), checked."""
    if chunk_steps is not None:
        if chunk_seconds is not None:
            raise ValueError(
                f"give chunk_steps ({chunk_steps!r}) or chunk_seconds ({chunk_seconds!r}), "
                "not both: a fixed chunk length has no time to adapt to")
        return _positive_int("chunk_steps", chunk_steps), CHUNK_SECONDS
    if chunk_seconds is None:
        return None, CHUNK_SECONDS
    if (isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, int | float)
            or not math.isfinite(chunk_seconds) or chunk_seconds <= 0):
        raise ValueError(
            f"chunk_seconds must be a positive number of seconds, got {chunk_seconds!r}")
    return None, float(chunk_seconds)


def run_in_chunks(
    one_step: Callable[[Any, Any], tuple[Any, Any]],
    state: Any,
    keys: Any,
    summarise: Callable[[Any], Any],
    on_chunk: Callable[[Any, int], None],
    *,
    chunk_steps: int | None = None,
    chunk_seconds: float = CHUNK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    history_axis: int = 0,
) -> tuple[Any, Any]:
    """``lax.scan(one_step, state, keys)`` in chunks, ``on_chunk(summary, steps)`` after each.

    ``summarise(state)`` (a tuple of arrays) runs on the device at the end of
    each chunk; ``on_chunk`` gets it as NumPy arrays, on this thread, with the
    chunk's length: first for the starting state (0 steps), then after every
    chunk. Returns the final state and the stacked outputs, as the scan would,
    the steps along ``history_axis`` (1: after a leading axis of chains).
    """
    jax, jnp, lax = load_jax()
    num_steps = int(jax.tree.leaves(keys)[0].shape[0])
    # traced once: the loop body below reuses this trace (a sampler's step is slow to trace)
    step = jax.jit(one_step)
    key = jax.tree.map(lambda k: jax.ShapeDtypeStruct(k.shape[1:], k.dtype), keys)
    outputs = step.eval_shape(state, key)[1]
    # one small program for the whole history (eager zeros would compile one per leaf shape)
    history = jax.jit(lambda: jax.tree.map(lambda o: jnp.zeros(
        (*o.shape[:history_axis], num_steps, *o.shape[history_axis:]), o.dtype), outputs))()

    pace = _Pace(chunk_steps, chunk_seconds, clock)
    if num_steps == 0:  # no loop to compile (it could not index the keys): the start only
        pace.read((jax.jit(summarise)(state), 0), on_chunk)
        return state, history

    @functools.partial(jax.jit, donate_argnums=(1,))
    def chunk(state: Any, history: Any, keys: Any, start: Any, stop: Any) -> Any:
        def body(carry: Any) -> Any:
            i, state, history = carry
            state, out = step(state, jax.tree.map(lambda k: k[i], keys))
            history = jax.tree.map(
                lambda h, o: lax.dynamic_update_index_in_dim(h, o, i, history_axis), history, out)
            return i + 1, state, history

        _, state, history = lax.while_loop(lambda c: c[0] < stop, body, (start, state, history))
        return state, history, summarise(state)

    # a chunk of no steps first (it compiles the program): the starting state's summary
    _, history, summary = chunk(state, history, keys, jnp.int32(0), jnp.int32(0))
    start, pending = 0, (summary, 0)
    while start < num_steps:
        stop = min(num_steps, start + pace.next_length())
        state, history, summary = chunk(state, history, keys, jnp.int32(start), jnp.int32(stop))
        # the chunk before this one (queued first, so finished or about to): read it now
        pace.read(pending, on_chunk)
        pending = (summary, stop - start)
        start = stop
    pace.read(pending, on_chunk)
    return state, history


class _Pace:
    """How long the next chunk is, from the host's reads.

    When a read waited, and so did the one before it, each ended with its
    chunk, so the time between them is the chunk's run time: the next chunk is
    sized to ``chunk_seconds`` at that rate. A read that did not wait means the
    device finished before the host asked (the host was busy, in ``on_chunk``
    say): the next chunk is made longer, so that the device idles less behind
    a slow host. The read after one that did not wait sizes nothing (its
    interval began after its chunk did).
    """

    def __init__(self, chunk_steps: int | None, chunk_seconds: float,
                 clock: Callable[[], float]) -> None:
        self.chunk_steps = chunk_steps
        self.chunk_seconds = chunk_seconds
        self.clock = clock
        self.length = FIRST_CHUNK
        self.read_at: float | None = None
        self.waited = False

    def next_length(self) -> int:
        return self.length if self.chunk_steps is None else self.chunk_steps

    def read(self, pending: tuple[Any, int], on_chunk: Callable[[Any, int], None]) -> None:
        summary, steps = pending
        asked = self.clock()
        values = tuple(np.asarray(leaf) for leaf in summary)  # waits for that chunk
        now = self.clock()
        waited = now - asked >= NO_WAIT
        if steps and not waited:
            self.length *= GROWTH
        elif steps and self.waited and self.read_at is not None and now > self.read_at:
            wanted = round(steps / (now - self.read_at) * self.chunk_seconds)
            self.length = max(1, min(wanted, GROWTH * self.length))
        self.read_at, self.waited = now, waited
        on_chunk(values, steps)
