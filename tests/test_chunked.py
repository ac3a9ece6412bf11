"""``run_in_chunks``: a jitted loop in chunks gives the scan's result; how the chunks are sized."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from autofit_jaxviz.device import chunked  # noqa: E402
from autofit_jaxviz.device.chunked import chunk_plan, run_in_chunks  # noqa: E402


def _step(state, key):
    return state * 0.5 + key, {"state": state, "double": 2 * key}


@pytest.mark.parametrize("chunk_steps", [3, 10, 25, None])
def test_chunks_give_the_scan_result_and_one_summary_per_chunk(chunk_steps):
    keys = jnp.arange(10.0)
    seen = []
    state, history = run_in_chunks(
        _step, jnp.float32(1.0), keys, lambda s: (s, s + 1), lambda v, n: seen.append((v, n)),
        chunk_steps=chunk_steps)
    want_state, want_history = jax.lax.scan(_step, jnp.float32(1.0), keys)
    np.testing.assert_allclose(state, want_state)
    for name in ("state", "double"):
        np.testing.assert_allclose(history[name], want_history[name])
    lengths = [n for _, n in seen]
    assert lengths[0] == 0 and sum(lengths) == 10  # the starting state first, then every step
    if chunk_steps is not None:
        assert lengths[1:] == [min(chunk_steps, 10 - i) for i in range(0, 10, chunk_steps)]
    # each summary is of the state after its chunk (the first: the starting state)
    done = np.cumsum(lengths)
    for (summary, _), steps in zip(seen, done, strict=True):
        expected = 1.0 if steps == 0 else want_history["state"][steps - 1] * 0.5 + keys[steps - 1]
        np.testing.assert_allclose(summary[0], expected)
        np.testing.assert_allclose(summary[1], expected + 1)


def test_steps_can_run_along_a_second_axis_of_the_history():
    keys = jnp.arange(12.0).reshape(6, 2)  # 6 steps of 2 chains

    def chains_step(state, key):
        return state + key, state * 3

    state, history = run_in_chunks(chains_step, jnp.zeros(2), keys, lambda s: (s,),
                                   lambda v, n: None, chunk_steps=4, history_axis=1)
    want_state, want_history = jax.lax.scan(chains_step, jnp.zeros(2), keys)
    np.testing.assert_allclose(state, want_state)
    np.testing.assert_allclose(history, np.swapaxes(want_history, 0, 1))  # chains first


def test_no_steps_returns_the_state_and_an_empty_history():
    seen = []
    state, history = run_in_chunks(_step, jnp.float32(1.0), jnp.zeros((0,)), lambda s: (s,),
                                   lambda v, n: seen.append(n))
    assert float(state) == 1.0 and history["state"].shape == (0,) and seen == [0]


class _Clock:
    """Times to hand out, two per read: when the host asked, when the chunk was there."""

    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def _reads(pace, reads):
    lengths = []
    for steps in reads:
        pace.read(((np.zeros(1),), steps), lambda values, n: None)
        lengths.append(pace.next_length())
    return lengths


def test_chunks_grow_at_most_fourfold_to_the_wanted_seconds_and_shrink_when_slower():
    # 100 steps/s, then 50: 0.5 s chunks are 50, then 25 steps. The starting state's read
    # does not wait (nothing to run), so the read after it sizes nothing
    clock = _Clock([0.0, 0.0,  0.0, 0.01,  0.01, 0.02,  0.02, 0.03,  0.03, 0.07,  0.07, 0.23,
                    0.23, 0.73,  0.73, 1.73])
    pace = chunked._Pace(None, 0.5, clock)
    assert pace.next_length() == 1
    assert _reads(pace, [0, 1, 1, 1, 4, 16, 50, 50]) == [1, 1, 4, 16, 50, 50, 50, 25]


def test_a_read_that_did_not_wait_makes_the_next_chunk_longer():
    # the host was busy for a second (in on_chunk, say): the chunk was done before it asked;
    # the waiting read after it began its interval late, so it sizes nothing
    clock = _Clock([0.0, 0.0,  0.0, 0.01,  1.01, 1.01,  2.01, 2.01,  2.01, 2.05,  2.05, 2.21])
    pace = chunked._Pace(None, 0.5, clock)
    assert _reads(pace, [0, 1, 1, 4, 16, 16]) == [1, 1, 4, 16, 16, 50]


def test_fixed_chunks_ignore_the_clock():
    pace = chunked._Pace(7, 0.5, _Clock([0.0, 0.0, 0.0, 5.0]))
    assert _reads(pace, [0, 7]) == [7, 7]


@pytest.mark.parametrize(("steps", "seconds", "message"), [
    (0, None, "chunk_steps must be an integer >= 1, got 0"),
    (2.5, None, "chunk_steps must be an integer >= 1, got 2.5"),
    (None, 0, "chunk_seconds must be a positive number of seconds, got 0"),
    (None, float("nan"), "chunk_seconds must be a positive number of seconds, got nan"),
    (None, "1", "chunk_seconds must be a positive number of seconds, got '1'"),
    (10, 0.5, r"give chunk_steps \(10\) or chunk_seconds \(0.5\), not both"),
])
def test_bad_chunk_plans_are_named(steps, seconds, message):
    with pytest.raises(ValueError, match=message):
        chunk_plan(steps, seconds)


def test_the_default_plan_adapts_to_half_a_second():
    assert chunk_plan(None, None) == (None, 0.5)
    assert chunk_plan(None, 2) == (None, 2.0)
    assert chunk_plan(12, None) == (12, 0.5)
