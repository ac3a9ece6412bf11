"""The in-jit best-fit hook, on real JAX (CPU).

Every test compares the exact sequence of best fits the host received with
the one computed in NumPy, so a missing, extra, duplicated or reordered
report fails. Callbacks are asynchronous: ``jax.effects_barrier()`` waits for
them before asserting (no sleeps).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from autofit_jaxviz import (
    BestFitTracker,
    HostSink,
    TrackerState,
    report,
    thinning_gate,
)
from autofit_jaxviz.payload import BestFit

ROOT = Path(__file__).resolve().parent.parent
N = 3


class Recorder:
    """A target with ``submit``: records every best fit it is handed."""

    def __init__(self) -> None:
        self.fits: list[BestFit] = []

    def submit(self, payload: BestFit) -> bool:
        self.fits.append(payload)
        return True

    def seq(self) -> list[tuple[int, float]]:
        return [(f.step, f.log_likelihood) for f in self.fits]


def loglike(theta: jax.Array) -> jax.Array:
    return -jnp.sum((theta - 0.5) ** 2)


def np_loglike(theta: np.ndarray) -> np.ndarray:
    return -np.sum((theta.astype(np.float32) - np.float32(0.5)) ** 2, axis=-1)


def improvements(lls: np.ndarray, every: int = 1, check_every: int = 1) -> list[tuple[int, float]]:
    """NumPy model of the tracker: (step found, ll) of each report, in order."""
    lls = np.asarray(lls, np.float32).reshape(len(lls), -1)
    best, best_step, reported, last = -np.inf, 0, -np.inf, -every
    out = []
    for step, row in enumerate(lls):
        top = np.where(np.isfinite(row), row, -np.inf).max()
        if top > best:
            best, best_step = top, step
        due = step - last >= every and (step + 1) % check_every == 0
        if best > reported and due:
            out.append((best_step, float(best)))
            reported, last = best, step
    return out


def final_best(lls: np.ndarray) -> tuple[int, float]:
    flat = np.where(np.isfinite(lls), lls, -np.inf).reshape(len(lls), -1).max(axis=1)
    return int(np.argmax(flat)), float(flat.max())


@pytest.fixture(scope="module")
def chain() -> tuple[np.ndarray, np.ndarray]:
    """120 single-walker steps whose log-likelihood improves irregularly.

    On a 1/64 grid, so NumPy and XLA compute bit-identical log-likelihoods.
    """
    return grid_params((120, N), seed=0)


def grid_params(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = (rng.integers(-64, 128, size=shape) / 64).astype(np.float32)
    return params, np_loglike(params)


def run_scan(tracker: BestFitTracker, params, lls, *, final: bool = True) -> TrackerState:
    @jax.jit
    def run(p, ll):
        state = tracker.init(jnp.zeros(N, jnp.float32))
        state, _ = lax.scan(lambda s, x: (tracker.update(s, *x), None), state, (p, ll))
        return tracker.report_final(state) if final else state

    state = run(params, lls)
    jax.effects_barrier()
    return state


# --------------------------------------------------------------------------- tracker


def test_scan_reports_exactly_the_improvements_in_order(chain) -> None:
    params, lls = chain
    rec = Recorder()
    tracker = BestFitTracker(rec)
    state = run_scan(tracker, params, lls)
    expected = improvements(lls)
    assert len(expected) >= 4  # the data really improves several times
    assert rec.seq() == expected
    for fit in rec.fits:
        np.testing.assert_array_equal(fit.parameters, params[fit.step])
        assert isinstance(fit.parameters, np.ndarray)
    assert rec.seq()[-1] == final_best(lls)
    assert tracker.sink.stats().received == len(expected) + 1  # + report_final, a no-op
    assert int(state.best_step) == final_best(lls)[0]
    np.testing.assert_array_equal(tracker.best_parameters(state), params[final_best(lls)[0]])


@pytest.fixture(scope="module")
def converging() -> tuple[np.ndarray, np.ndarray]:
    """A chain closing in on the optimum: improvements come often, then rarely."""
    rng = np.random.default_rng(5)
    steps = 200
    scale = np.linspace(1.0, 0.05, steps)[:, None]
    params = (0.5 + np.round(rng.normal(size=(steps, N)) * scale * 64) / 64).astype(np.float32)
    return params, np_loglike(params)


@pytest.mark.parametrize(("every", "check_every"), [(7, 1), (1, 5), (4, 3)])
def test_cadence_defers_improvements_and_final_delivers_the_last(
    converging, every, check_every
) -> None:
    params, lls = converging
    rec = Recorder()
    tracker = BestFitTracker(rec, every=every, check_every=check_every)
    run_scan(tracker, params, lls, final=False)
    expected = improvements(lls, every, check_every)
    assert rec.seq() == expected
    # at most one host call per `every` steps, only on checked steps
    assert tracker.sink.stats().received == len(expected) <= len(lls) // max(every, check_every) + 1
    # the cadence really coalesced improvements made within one window
    assert len(expected) < len(improvements(lls))
    rec.fits.clear()
    tracker.sink.reset()
    run_scan(tracker, params, lls, final=True)
    # ...report_final pushes the true best after the loop
    assert rec.seq()[-1] == final_best(lls)
    assert rec.seq()[:-1] == [e for e in expected if e != final_best(lls)]


def test_track_inside_and_maybe_report_outside(converging) -> None:
    """No cond in the inner loop: reports once per block of 10 steps at most."""
    params, lls = converging
    rec = Recorder()
    tracker = BestFitTracker(rec)

    @jax.jit
    def run(p, ll):
        def inner(s, x):
            return tracker.track(s, *x), None

        def outer(s, x):
            return tracker.maybe_report(lax.scan(inner, s, x)[0]), None

        state = tracker.init(jnp.zeros(N, jnp.float32))
        blocks = (p.reshape(20, 10, N), ll.reshape(20, 10))
        return lax.scan(outer, state, blocks)[0]

    run(params, lls)
    jax.effects_barrier()
    assert rec.seq() == improvements(lls, check_every=10)
    assert len(rec.fits) < len(improvements(lls))


def test_deferred_improvement_is_reported_at_next_allowed_step() -> None:
    lls = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    params = np.arange(8 * N, dtype=np.float32).reshape(8, N)
    rec = Recorder()
    run_scan(BestFitTracker(rec, every=4), params, lls, final=False)
    # step 0 reports 1.0; 2.0 and 3.0 arrive inside the cadence window; 3.0 (found
    # at step 2) goes out at step 4, the next step allowed to report.
    assert rec.seq() == [(0, 1.0), (2, 3.0)]
    np.testing.assert_array_equal(rec.fits[1].parameters, params[2])


@pytest.mark.parametrize("loop", ["while_loop", "fori_loop", "cond"])
def test_while_and_fori_loops(chain, loop) -> None:
    params, lls = chain
    rec = Recorder()
    tracker = BestFitTracker(rec)

    @jax.jit
    def run(p):
        state = tracker.init(jnp.zeros(N, jnp.float32))

        def body(i, s):
            return tracker.update(s, p[i], loglike(p[i]))

        if loop == "fori_loop":
            return lax.fori_loop(0, len(p), body, state)
        if loop == "cond":  # update on even steps only, inside a cond branch
            even = lambda i, s: lax.cond(i % 2 == 0, body, lambda i, s: s, i, s)  # noqa: E731
            return lax.fori_loop(0, len(p), even, state)
        cond = lambda c: c[0] < len(p)  # noqa: E731
        return lax.while_loop(cond, lambda c: (c[0] + 1, body(c[0], c[1])), (0, state))[1]

    run(params)
    jax.effects_barrier()
    if loop == "cond":  # the tracker counts its own updates: step k is params[2k]
        assert rec.seq() == improvements(lls[::2])
        assert rec.seq() != improvements(lls)
    else:
        assert rec.seq() == improvements(lls)


def test_batch_of_walkers_is_reduced_on_device() -> None:
    rng = np.random.default_rng(1)
    steps, walkers = 30, 1000
    params = rng.normal(size=(steps, walkers, N)).astype(np.float32)
    shift = rng.normal(size=(steps, 1)).astype(np.float32)
    params_j = jnp.asarray(params)
    rec = Recorder()
    tracker = BestFitTracker(rec)

    @jax.jit
    def run(p):
        state = tracker.init(jnp.zeros(N, jnp.float32))

        def body(s, x):
            theta, dl = x
            return tracker.update(s, theta, jax.vmap(loglike)(theta) + dl), None

        return lax.scan(body, state, (p, jnp.asarray(shift)))[0]

    run(params_j)
    jax.effects_barrier()
    lls = np.asarray(jax.vmap(jax.vmap(loglike))(params_j)) + shift
    expected = improvements(lls)
    assert len(expected) >= 3
    assert rec.seq() == expected
    assert tracker.sink.stats().received == len(expected)
    for fit in rec.fits:
        np.testing.assert_array_equal(fit.parameters, params[fit.step, np.argmax(lls[fit.step])])


def test_vmapped_chains_call_back_once_per_step_at_most() -> None:
    """A tracker inside vmapped chains: a batched cond would fire every time."""
    chains, steps = 64, 25
    params, lls = grid_params((chains, steps, N), seed=2)
    rec = Recorder()
    tracker = BestFitTracker(rec)

    def one_chain(p):
        state = tracker.init(jnp.zeros(N, jnp.float32))
        body = lambda s, x: (tracker.update(s, x, loglike(x)), None)  # noqa: E731
        return lax.scan(body, state, p)[0].best_log_likelihood

    bests = jax.jit(jax.vmap(one_chain))(jnp.asarray(params))
    jax.effects_barrier()
    expected = improvements(lls.T)
    assert rec.seq() == expected
    assert tracker.sink.stats().received <= steps
    np.testing.assert_array_equal(np.asarray(bests), lls.max(axis=1))


def test_pytree_parameters_are_rebuilt_with_numpy_leaves() -> None:
    rec = Recorder()
    tracker = BestFitTracker(rec)
    template = {"centre": jnp.zeros(2, jnp.float32), "sigma": jnp.float32(1.0)}
    centres = np.array([[1.0, 1.0], [0.3, 0.1], [2.0, 2.0], [0.05, 0.0]], np.float32)
    sigmas = np.array([1.0, 0.9, 0.2, 1.1], np.float32)

    def ll_of(p):
        return -jnp.sum(p["centre"] ** 2) - (p["sigma"] - 1.0) ** 2

    @jax.jit
    def run(c, s):
        state = tracker.init(template)

        def body(st, x):
            p = {"centre": x[0], "sigma": x[1]}
            return tracker.update(st, p, ll_of(p)), None

        return lax.scan(body, state, (c, s))[0]

    state = run(centres, sigmas)
    jax.effects_barrier()
    assert [f.step for f in rec.fits] == [0, 1, 3]
    last = rec.fits[-1].parameters
    assert set(last) == {"centre", "sigma"}
    assert isinstance(last["centre"], np.ndarray) and last["centre"].dtype == np.float32
    np.testing.assert_array_equal(last["centre"], centres[3])
    assert last["sigma"].shape == () and last["sigma"] == sigmas[3]
    assert not last["centre"].flags.writeable  # a renderer cannot mutate a shared leaf
    best = tracker.best_parameters(state)
    np.testing.assert_array_equal(best["centre"], centres[3])


def test_nothing_improving_means_no_callback() -> None:
    rec = Recorder()
    tracker = BestFitTracker(rec)
    params = np.ones((10, N), np.float32)
    lls = np.array([np.nan, -np.inf, np.inf, np.nan] * 2 + [np.nan, np.nan], np.float32)
    state = run_scan(tracker, params, lls, final=True)
    assert rec.fits == []
    assert tracker.sink.stats().received == 0
    assert float(state.best_log_likelihood) == -np.inf
    # a constant log-likelihood improves once, then never again
    run_scan(tracker, params, np.zeros(10, np.float32), final=False)
    assert rec.seq() == [(0, 0.0)]
    assert tracker.sink.stats().received == 1


def test_nan_and_inf_never_become_the_best() -> None:
    rec = Recorder()
    lls = np.array([1.0, np.nan, 2.0, np.inf, np.nan, 1.5, 3.0], np.float32)
    params = np.arange(7 * N, dtype=np.float32).reshape(7, N)
    run_scan(BestFitTracker(rec), params, lls)
    assert rec.seq() == [(0, 1.0), (2, 2.0), (6, 3.0)]
    # in a batch, argmax would pick the NaN row
    rec2 = Recorder()
    batch = np.array([[np.nan, 0.5, 2.0, np.inf]], np.float32)
    run_scan(BestFitTracker(rec2), np.ones((1, 4, N), np.float32) * np.arange(4)[:, None], batch)
    assert rec2.seq() == [(0, 2.0)]
    np.testing.assert_array_equal(rec2.fits[0].parameters, [2.0, 2.0, 2.0])


def test_init_from_a_batch_and_steps_beyond_float32_precision() -> None:
    rec = Recorder()
    tracker = BestFitTracker(rec)
    p0 = np.array([[1.0, 1, 1], [0.5, 0.5, 0.5]], np.float32)
    state = tracker.init(p0, jnp.array([-3.0, -0.5]))
    state = state._replace(step=jnp.int32(16_777_217 + 65_536))  # not exact in float32

    @jax.jit
    def step(s, p, ll):
        return tracker.update(s, p, ll)

    state = step(state, jnp.full(N, 2.0), jnp.float32(-4.0))  # worse: reports the initial
    state = step(state, jnp.full(N, 3.0), jnp.float32(1.0))
    jax.effects_barrier()
    assert rec.seq() == [(0, -0.5), (16_777_217 + 65_537, 1.0)]
    np.testing.assert_array_equal(rec.fits[0].parameters, p0[1])


def test_report_final_outside_jit_is_synchronous(chain) -> None:
    params, lls = chain
    rec = Recorder()
    tracker = BestFitTracker(rec, min_seconds=3600.0)  # hold everything after the first
    state = run_scan(tracker, params, lls, final=False)
    assert len(rec.fits) == 1 and tracker.sink.stats().held
    tracker.report_final(state)  # concrete state: no effects_barrier needed
    assert rec.seq() == [improvements(lls)[0], final_best(lls)]
    assert not tracker.sink.stats().held


# --------------------------------------------------------------------------- report


def hooked(sink: HostSink):
    def f(theta):
        ll = loglike(theta)
        report(sink, theta, ll)
        return ll

    return f


def test_report_in_vmap_of_value_and_grad_calls_back_once_per_batch() -> None:
    rng = np.random.default_rng(4)
    thetas = rng.normal(size=(1000, N)).astype(np.float32)
    rec = Recorder()
    sink = HostSink(rec)
    f = jax.jit(jax.vmap(jax.value_and_grad(hooked(sink))))
    plain = jax.jit(jax.vmap(jax.value_and_grad(loglike)))
    (v1, g1), (v2, g2) = f(thetas), plain(thetas)
    jax.effects_barrier()
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(g1, g2)  # the hook adds no gradient
    assert sink.stats().received == 1
    lls = np.asarray(v2)
    assert rec.seq() == [(1, float(lls.max()))]
    np.testing.assert_array_equal(rec.fits[0].parameters, thetas[np.argmax(lls)])
    # a second batch that is worse is compared on the host and dropped
    f(thetas + 10.0)
    jax.effects_barrier()
    assert sink.stats().received == 2 and len(rec.fits) == 1


@pytest.mark.parametrize(
    "transform",
    ["jit", "grad", "value_and_grad", "checkpoint", "cond", "nested_vmap", "vmap_of_cond"],
)
def test_report_survives_transformations(chain, transform) -> None:
    params, lls = chain
    rec = Recorder()
    sink = HostSink(rec)
    f = hooked(sink)
    p = jnp.asarray(params)
    if transform == "jit":
        out = jax.jit(lambda p: lax.map(f, p))(p)
    elif transform == "grad":
        out = jax.jit(lambda p: lax.map(jax.grad(f), p))(p)
        np.testing.assert_array_equal(out, jax.vmap(jax.grad(loglike))(p))
    elif transform == "value_and_grad":
        out = jax.jit(lambda p: lax.map(jax.value_and_grad(f), p))(p)
    elif transform == "checkpoint":  # the forward pass runs twice; the host dedups
        out = jax.jit(lambda p: lax.map(jax.grad(jax.checkpoint(f)), p))(p)
        np.testing.assert_array_equal(out, jax.vmap(jax.grad(loglike))(p))
    elif transform == "cond":
        out = jax.jit(lambda p: lax.map(lambda t: lax.cond(t[0] > -5, f, loglike, t), p))(p)
    elif transform == "nested_vmap":
        out = jax.jit(jax.vmap(jax.vmap(f)))(p.reshape(10, 12, N))
    elif transform == "vmap_of_cond":
        out = jax.jit(jax.vmap(lambda t: lax.cond(t[0] > 0, f, loglike, t)))(p)
    del out
    jax.effects_barrier()
    received = sink.stats().received
    lls64 = lls.astype(np.float64)
    if transform in ("nested_vmap", "vmap_of_cond"):
        mask = params[:, 0] > 0 if transform == "vmap_of_cond" else np.ones(len(lls), bool)
        assert received == 1
        best = np.where(mask, lls, -np.inf)
        assert rec.seq() == [(1, float(best.max()))]
        np.testing.assert_array_equal(rec.fits[0].parameters, params[np.argmax(best)])
        return
    # one evaluation per step, in order: the host keeps exactly the improvements,
    # its step being the callback count
    calls_per_eval = 2 if transform == "checkpoint" else 1
    assert received in (len(lls), calls_per_eval * len(lls))
    expected = [(s, ll) for s, ll in improvements(lls64)]
    if received == len(lls):
        assert rec.seq() == [(s + 1, ll) for s, ll in expected]
    else:
        assert [ll for _, ll in rec.seq()] == [ll for _, ll in expected]
    assert rec.seq()[-1][1] == final_best(lls)[1]


def test_report_when_gate_and_nan() -> None:
    rec = Recorder()
    sink = HostSink(rec)
    thetas = jnp.asarray(grid_params((30, N), seed=6)[0])

    def f(theta, i):
        ll = loglike(theta)
        ll = jnp.where(i == 7, jnp.nan, ll)
        report(sink, theta, ll, when=i % 5 == 2)
        return ll

    jax.jit(lambda t: lax.map(lambda x: f(*x), (t, jnp.arange(30))))(thetas)
    jax.effects_barrier()
    # only i = 2, 12, 17, 22, 27 call back (7 is NaN and is skipped on the device)
    assert sink.stats().received == 5
    lls = np_loglike(np.asarray(thetas))
    gated = [i for i in (2, 12, 17, 22, 27)]
    best, expected = -np.inf, []
    for k, i in enumerate(gated):
        if lls[i] > best:
            best = lls[i]
            expected.append((k + 1, float(lls[i])))
    assert rec.seq() == expected


def _two_starts(tracker: BestFitTracker):
    """A jitted scan over ``(steps, 2)`` log-likelihoods: two vmapped trackers."""

    @jax.jit
    def run(lls):
        state = jax.vmap(lambda _: tracker.init(jnp.zeros(1)))(jnp.arange(2))

        def step(state, row):
            return jax.vmap(lambda s, ll: tracker.update(s, jnp.full(1, ll), ll))(state, row), None

        return jax.lax.scan(step, state, lls)[0]

    return run


def test_vmapped_trackers_send_only_a_new_best_of_the_whole_batch() -> None:
    """A multi-start run: start 0 reaches its best at once, start 1 improves at
    every step but stays below it. Only the batch's new bests reach the host."""
    rec = Recorder()
    sink = HostSink(rec)
    tracker = BestFitTracker(sink)
    steps = 20
    climbing = -100.0 + np.arange(steps, dtype=np.float32)  # -100 ... -81, below -1
    lls = jnp.asarray(np.stack([np.full(steps, -1.0, np.float32), climbing], axis=1))

    run = _two_starts(tracker)

    run(lls)
    jax.effects_barrier()
    assert rec.seq() == [(0, -1.0)]
    assert sink.stats().received == 1  # not one stale callback per step from start 1
    # once start 1 overtakes, its new bests are sent
    rec.fits.clear()
    sink.reset()
    overtaking = jnp.asarray(np.stack([np.full(4, -1.0, np.float32),
                                       np.array([-5.0, -0.5, -0.4, -0.6], np.float32)], axis=1))
    run(overtaking)
    jax.effects_barrier()
    assert [ll for _, ll in rec.seq()] == pytest.approx([-1.0, -0.5, -0.4])


def test_vmapped_trackers_with_their_own_cadences_send_what_beats_every_report() -> None:
    """every=2, the rows' gates open on different steps: at step 2 start 0 may
    report (-9) while start 1 holds a better best (-1) behind its closed gate.
    -9 beats everything reported so far, so it is sent; -1 follows at step 3."""
    rec = Recorder()
    sink = HostSink(rec)
    tracker = BestFitTracker(sink, every=2)
    lls = jnp.asarray(np.array([[-10, -np.inf], [-10, -20], [-9, -1], [-9, -1]], np.float32))

    run = _two_starts(tracker)

    run(lls)
    jax.effects_barrier()
    assert rec.seq() == [(0, -10.0), (2, -9.0), (2, -1.0)]
    assert sink.stats().stale == 0


def test_report_with_an_explicit_batch_and_a_batched_gate() -> None:
    rec = Recorder()
    sink = HostSink(rec)
    thetas = np.array([[0.5, 0.5, 0.5], [0.4, 0.5, 0.5], [1.0, 1.0, 1.0]], np.float32)
    lls = np_loglike(thetas)

    @jax.jit
    def f(t):
        report(sink, t, loglike_batch(t), when=jnp.array([False, True, True]))

    def loglike_batch(t):
        return jax.vmap(loglike)(t)

    f(thetas)
    jax.effects_barrier()
    assert rec.seq() == [(1, float(lls[1]))]  # row 0 is better but gated off
    # the same gate per element under vmap: the batching rule honours it
    sink.reset()
    rec.fits.clear()

    def g(t, gate):
        report(sink, t, loglike(t), when=gate)

    jax.jit(jax.vmap(g))(thetas, jnp.array([False, True, True]))
    jax.effects_barrier()
    assert rec.seq() == [(1, float(lls[1]))]
    assert sink.stats().received == 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "ll", "error", "needle"),
    [
        (np.zeros((5, N), np.float32), np.zeros(4, np.float32), ValueError, "(5, 3)"),
        (np.zeros(N, np.float32), np.zeros((2, 2), np.float32), ValueError, "(2, 2)"),
        (np.zeros((0, N), np.float32), np.zeros(0, np.float32), ValueError, "walkers >= 1"),
        (np.zeros(N, np.int32), np.float32(0), TypeError, "int32[3]"),
        (np.zeros(N, np.float32), np.int32(0), TypeError, "int32[]"),
        (np.zeros(N + 1, np.float32), np.float32(0), ValueError, "float32[4]"),
        ({"a": np.zeros(N, np.float32)}, np.float32(0), ValueError, "['a']: float32[3]"),
    ],
)
def test_bad_input_is_named_at_trace_time(params, ll, error, needle) -> None:
    tracker = BestFitTracker(Recorder())
    state = tracker.init(jnp.zeros(N, jnp.float32))
    with pytest.raises(error) as info:
        jax.jit(tracker.update)(state, params, ll)
    assert needle in str(info.value)


def test_bad_report_and_config_errors() -> None:
    with pytest.raises(TypeError, match="HostSink"):
        jax.jit(lambda t: report(Recorder(), t, loglike(t)))(jnp.zeros(N))
    sink = HostSink(Recorder())
    with pytest.raises(ValueError, match=r"when must be a bool.*\(\)"):
        jax.jit(lambda t: report(sink, t, loglike(t), when=t))(jnp.zeros(N))
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        BestFitTracker(Recorder(), every=0)
    with pytest.raises(ValueError, match="check_every must be an integer >= 1, got 2.5"):
        BestFitTracker(Recorder(), check_every=2.5)
    with pytest.raises(TypeError, match="submit"):
        HostSink(42)
    with pytest.raises(ValueError, match="min_seconds"):
        HostSink(Recorder(), min_seconds=-1)
    with pytest.raises(TypeError, match="TrackerState"):
        BestFitTracker(Recorder()).update({}, jnp.zeros(N), 0.0)


# --------------------------------------------------------------------------- host sink


def test_host_sink_with_a_plain_callable_and_failures_are_contained(caplog) -> None:
    delivered: list[BestFit] = []
    boom = [True]

    def target(fit: BestFit) -> None:
        if boom[0]:
            raise RuntimeError("renderer exploded")
        delivered.append(fit)

    sink = HostSink(target)
    thetas = np.array([[0.0] * N, [0.25] * N, [0.375] * N, [0.5] * N], np.float32)
    f = jax.jit(lambda t: lax.map(hooked(sink), t))
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.host.sink"):
        out = f(thetas)  # every submit raises; the computation still finishes
        jax.effects_barrier()
    np.testing.assert_array_equal(out, np_loglike(thetas))
    assert sink.stats().failed == 4
    ours = [r for r in caplog.records if r.name == "autofit_jaxviz.host.sink"]
    assert len(ours) == 1  # the first failure with its traceback, then rate-limited
    assert ours[0].exc_info is not None and "renderer exploded" in str(ours[0].exc_info[1])
    boom[0] = False
    sink.reset()
    f(thetas)
    jax.effects_barrier()
    assert [fit.log_likelihood for fit in delivered] == [float(x) for x in np_loglike(thetas)]


def test_host_sink_other_process_is_a_no_op() -> None:
    rec = Recorder()
    sink = HostSink(rec)
    spec = BestFitTracker(sink).init(jnp.zeros(N)).spec
    packed = np.array([1.0, 0.0, 5.0, 1.0, 2.0, 3.0], np.float32)
    sink._on_device(spec, True, False, 1, packed)
    assert rec.fits == [] and sink.stats().other_process == 1
    sink._on_device(spec, True, False, 0, packed)
    assert rec.seq() == [(5, 1.0)]


def test_min_seconds_holds_then_flush_delivers() -> None:
    rec = Recorder()
    sink = HostSink(rec, min_seconds=3600.0)
    lls = np.array([1.0, 2.0, 3.0, 0.5], np.float32)
    thetas = np.arange(4 * N, dtype=np.float32).reshape(4, N)

    def f(t, ll):
        report(sink, t, ll)
        return ll

    jax.jit(lambda t, ll: lax.map(lambda x: f(*x), (t, ll)))(thetas, lls)
    jax.effects_barrier()
    assert rec.seq() == [(1, 1.0)]  # 2.0 was held and superseded by 3.0
    assert sink.best is not None and sink.best.log_likelihood == 3.0
    assert sink.flush() is True
    assert rec.seq() == [(1, 1.0), (3, 3.0)]
    assert sink.flush() is False


def test_through_a_real_sync_worker(chain) -> None:
    from autofit_jaxviz.render.worker import QuickUpdateWorker

    params, lls = chain
    rendered: list[BestFit] = []
    worker = QuickUpdateWorker(rendered.append, backend="sync")
    try:
        run_scan(BestFitTracker(worker), params, lls)
        assert worker.flush(5.0)
    finally:
        worker.shutdown(5.0)
    assert [(f.step, f.log_likelihood) for f in rendered] == improvements(lls)


def test_package_imports_without_jax() -> None:
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "import autofit_jaxviz, autofit_jaxviz as cb\n"
        "got = []; sink = cb.HostSink(got.append)\n"
        "try:\n"
        "    cb.BestFitTracker(sink).init([0.0])\n"
        "except ImportError as e:\n"
        "    assert 'pip install jax' in str(e), e\n"
        "    print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("every", [1, 7, 50, 1000])
def test_thinning_gate_passes_about_one_in_every(every) -> None:
    """A sampler's proposals are effectively random bits: the gate keeps ~1/every."""
    points = jax.random.normal(jax.random.key(3), (200_000, 3)) * 10.0 + 50.0
    passed = jax.jit(jax.vmap(lambda p: thinning_gate(p, every)))(points)
    fraction = float(jnp.mean(passed))
    sigma = np.sqrt((1 / every) * (1 - 1 / every) / points.shape[0])
    assert abs(fraction - 1 / every) <= 5 * sigma + 1e-12, (fraction, 1 / every)
    again = jax.jit(jax.vmap(lambda p: thinning_gate(p, every)))(points)
    assert bool(jnp.all(passed == again))  # a function of the point, nothing else


def test_thinning_gate_with_a_cadence_beyond_32_bits() -> None:
    # autofit cadences may be huge (anything below its 1e99 "never")
    points = jax.random.normal(jax.random.key(4), (10_000, 3))
    passed = jax.jit(jax.vmap(lambda p: thinning_gate(p, 10**12)))(points)
    assert int(jnp.sum(passed)) == 0


@pytest.mark.parametrize("every", [0, -3, 2.5, True, "50"])
def test_thinning_gate_names_a_bad_every(every) -> None:
    with pytest.raises(ValueError, match=f"every must be a positive int, got {every!r}"):
        thinning_gate(jnp.zeros(3), every)


def test_transform_is_applied_only_to_what_is_sent():
    """``transform`` maps the best parameters for the host (e.g. to a constrained
    space) inside the report branch; the state keeps tracking them as given."""
    rec = Recorder()
    tracker = BestFitTracker(rec)
    def constrain(p):
        return {"scale": jnp.exp(p["log_scale"]), "log_scale": p["log_scale"]}

    thetas = jnp.asarray([-2.0, -1.0, -1.5, 0.0, -0.5], jnp.float32)

    @jax.jit
    def run(thetas):
        def step(state, t):
            params = {"log_scale": t}
            return tracker.update(state, params, -t**2, transform=constrain), None
        state, _ = lax.scan(step, tracker.init({"log_scale": thetas[0]}), thetas)
        return state

    state = run(thetas)
    jax.effects_barrier()
    lls = -np.asarray(thetas) ** 2
    assert rec.seq() == improvements(lls)
    for fit in rec.fits:
        assert float(fit.parameters["scale"]) == pytest.approx(np.exp(fit.parameters["log_scale"]))
    # the state itself tracked log_scale, untransformed
    assert float(tracker.best_parameters(state)["log_scale"]) == 0.0
    # report_final with a transform on a concrete state: handed on before it returns
    sink_rec = Recorder()
    final = BestFitTracker(sink_rec)
    final.report_final(state, transform=constrain)
    assert len(sink_rec.fits) == 1
    assert float(sink_rec.fits[0].parameters["scale"]) == pytest.approx(1.0)
