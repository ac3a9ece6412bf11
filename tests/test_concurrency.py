"""Nothing lost under concurrency and at the edges (issue #14's rows of RELIABILITY.md)."""

from __future__ import annotations

import os
import signal
import threading

import autofit as af
import numpy as np
import pytest
from autofit_helpers import MarkedAnalysis, gaussian_data, gaussian_model, read_markers

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.payload import BestFit

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.usefixtures("autofit_output")]
JOIN = 60.0


def _fitness(backend: str):
    live.enable(background=True, backend=backend)
    search = af.Emcee(name="race", nwalkers=10, nsteps=10, iterations_per_quick_update=1)
    model = gaussian_model()
    search.paths.model = model
    data, noise = gaussian_data()
    fitness = search.make_fitness(analysis=MarkedAnalysis(data=data, noise_map=noise),
                                  model=model)
    return fitness, hub_module.hub_for(fitness)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_worse_fit_from_a_second_producer_is_never_the_last_picture(tmp_path, backend):
    """Producer A passes the hub's check with a fit of log L -5 and is held just
    before it submits; producer B submits a better fit (-1), which is drawn;
    then A's submit lands. The last picture must still be B's fit."""
    fitness, hub = _fitness(backend)
    real_submit = hub.worker.submit
    a_inside, b_drawn = threading.Event(), threading.Event()

    def submit(best, **kwargs):
        if best.log_likelihood == -5.0:
            a_inside.set()
            assert b_drawn.wait(JOIN)
        return real_submit(best, **kwargs)

    hub.worker.submit = submit
    worse, better = np.array([40.0, 20.0, 8.0]), np.array([50.0, 25.0, 10.0])
    producer_a = threading.Thread(target=hub.offer_best, args=(BestFit(-5.0, worse, 1),))
    producer_a.start()
    assert a_inside.wait(JOIN)
    hub.offer_best(BestFit(-1.0, better, 2))
    assert hub.worker.flush(JOIN)
    b_drawn.set()
    producer_a.join(JOIN)
    assert hub.worker.flush(JOIN)
    fitness._jaxviz_closed = True
    hub.close(None, -np.inf, 3)
    rows = read_markers(tmp_path / "output")
    np.testing.assert_allclose(rows[-1][0], better)
    assert hub.worker.stats.outranked == 1


LOOPS_SCRIPT = r'''
import sys
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_cpu_enable_async_dispatch", sys.argv[1] == "async")
from autofit_jaxviz import BestFitTracker, HostSink

lls = jnp.asarray(np.random.default_rng(0).normal(size=300).astype(np.float32))
chains = jnp.asarray(np.random.default_rng(1).normal(size=(4, 300)).astype(np.float32))


def run(kind):
    got = []
    tracker = BestFitTracker(HostSink(got.append), every=7)
    state = tracker.init(jnp.zeros(2, jnp.float32))

    def fold(s, ll):
        return tracker.update(s, jnp.stack([ll, 2 * ll]), ll)

    if kind == "while_loop":
        out = jax.jit(lambda s: jax.lax.while_loop(
            lambda c: c[0] < lls.shape[0], lambda c: (c[0] + 1, fold(c[1], lls[c[0]])),
            (0, s))[1])(state)
        expected = float(lls.max())
    elif kind == "fori_loop":
        out = jax.jit(lambda s: jax.lax.fori_loop(
            0, lls.shape[0], lambda i, c: fold(c, lls[i]), s))(state)
        expected = float(lls.max())
    elif kind == "cond":  # the update inside a branch taken on odd steps only
        def step(c, i):
            return jax.lax.cond(i % 2 == 1, lambda c: fold(c, lls[i]), lambda c: c, c), None
        out = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(lls.shape[0]))[0])(state)
        expected = float(lls[1::2].max())
    elif kind == "scan_in_vmap":  # one state per chain, vmapped chains
        def chain(s, row):
            return jax.lax.scan(lambda c, ll: (fold(c, ll), None), s, row)[0]
        states = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 4), state)
        out = jax.jit(jax.vmap(chain))(states, chains)
        expected = float(chains.max())
        out = jax.tree_util.tree_map(lambda x: x[int(jnp.argmax(out.best_log_likelihood))], out)
    jax.effects_barrier()
    tracker.report_final(out)
    assert got, kind
    best = max(b.log_likelihood for b in got)
    assert best == expected, (kind, best, expected)
    assert got[-1].log_likelihood == expected, (kind, [b.log_likelihood for b in got])
    return len(got)


for kind in ("while_loop", "fori_loop", "cond", "scan_in_vmap"):
    print(kind, run(kind))
print("OK")
'''


@pytest.mark.slow
@pytest.mark.parametrize("dispatch", ["async", "sync"])
def test_the_tracker_delivers_the_true_best_from_every_kind_of_jax_loop(tmp_path, dispatch):
    """while_loop (JAX issue #25861 reports a hang there under CPU async dispatch),
    fori_loop, cond and scan nested in vmap: the host ends with the true best,
    and the run ends (a hang would reach the subprocess timeout)."""
    import subprocess
    import sys

    script = tmp_path / "loops.py"
    script.write_text(LOOPS_SCRIPT)
    out = subprocess.run([sys.executable, str(script), dispatch], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK"), out.stdout


def test_the_end_of_a_jitted_fit_and_interpreter_exit_wait_for_jax_callbacks(monkeypatch):
    """hub.close (jitted searches) and the exit hook call jax.effects_barrier
    before they flush: no callback still in flight is lost (JAX issue #19867)."""
    import jax

    from autofit_jaxviz.render import lifecycle

    calls = []
    monkeypatch.setattr(jax, "effects_barrier", lambda: calls.append("barrier"))
    fitness, hub = _fitness("thread")
    hub.sink = _RecordingSink(calls)
    fitness._jaxviz_closed = True
    hub.close(None, -np.inf, 0)
    assert calls[:2] == ["barrier", "sink.flush"]

    calls.clear()

    class _Worker:
        name, shutdown_timeout = "w", 1.0

        def render_running_for(self):
            return 0.0

        def shutdown(self, timeout):
            calls.append("shutdown")

    monkeypatch.setattr(lifecycle, "_live_workers", [_Worker()])
    lifecycle.shutdown_all()
    assert calls == ["barrier", "shutdown"]


class _RecordingSink:
    def __init__(self, calls):
        self.calls = calls

    def flush(self):
        self.calls.append("sink.flush")
        return False


@pytest.mark.slow
@pytest.mark.parametrize("search_kind", ["nuts", "emcee"])
def test_the_last_picture_is_the_results_maximum_likelihood_sample(tmp_path, search_kind):
    """BlackJAX NUTS reports only ~1 evaluation in iterations_per_quick_update
    to the host, so the best the hub saw is the best of a subsample; whatever
    it saw, the picture left behind is the sample autofit's result names."""
    data, noise = gaussian_data()
    if search_kind == "nuts":
        pytest.importorskip("blackjax")
        analysis = MarkedAnalysis(data=data, noise_map=noise, use_jax=True)
        search = af.BlackJAXNUTS(name="nuts", num_warmup=50, num_samples=100, num_chains=2,
                                 iterations_per_quick_update=50, silence=True, seed=3)
    else:
        analysis = MarkedAnalysis(data=data, noise_map=noise)
        search = af.Emcee(name="emcee", nwalkers=20, nsteps=100, iterations_per_quick_update=300,
                          silence=True, seed=1)
    live.enable(background=True)
    result = search.fit(model=gaussian_model(), analysis=analysis)
    expected = result.samples.max_log_likelihood(as_instance=False)
    rows = read_markers(tmp_path / "output")
    np.testing.assert_allclose(rows[-1][0], expected, rtol=1e-12)
    assert id(analysis) not in hub_module.awaiting_result


def _fork(body) -> int:
    pid = os.fork()
    if pid == 0:  # the child: like a pool worker, it only sends
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _exited(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None if it is still running after ``timeout``."""
    status: list[int] = []
    waiter = threading.Thread(target=lambda: status.append(os.waitpid(pid, 0)[1]), daemon=True)
    waiter.start()
    waiter.join(timeout)
    return status[0] if status else None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # os.fork with JAX's threads around
def test_a_pool_child_killed_mid_fit_neither_hangs_nor_corrupts_the_parent():
    from autofit_jaxviz.autofit.pool import PoolForwarder

    forwarder = PoolForwarder("pool", on_due=lambda step: None)
    killed = _fork(lambda: [forwarder.send_best(-1e9 + k, [k, 0.0]) for k in iter(int, 1)])
    finishers = [_fork(lambda i=i: [forwarder.send_best(100.0 * i + k, [i, k])
                                    for k in range(2000)]) for i in (1, 2)]
    assert all(_exited(pid, JOIN) == 0 for pid in finishers)
    os.kill(killed, signal.SIGKILL)  # mid-write for all we know: writes are atomic
    assert _exited(killed, JOIN) is not None
    forwarder.close(JOIN)
    assert not forwarder.listener.is_alive()
    assert forwarder.bad == 0  # no torn or interleaved message, SIGKILL or not
    # a full pipe drops messages (the flooding child fills it), never corrupts
    # them: the best is one pair exactly as a child sent it
    log_likelihood, (first, second) = forwarder.best
    assert log_likelihood == (100.0 * first + second if first in (1.0, 2.0) else -1e9 + first)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_pool_child_never_waits_for_a_parent_that_fell_behind():
    """The parent's listener is stuck (a slow submit); a child writes 100,000
    improvements, far more than a pipe holds, and still finishes on its own."""
    from autofit_jaxviz.autofit.pool import PoolForwarder

    stuck, entered = threading.Event(), threading.Event()

    def on_due(step):
        entered.set()
        stuck.wait(JOIN)

    forwarder = PoolForwarder("pool", on_due=on_due)
    forwarder.send_best(1.0, [1.0])  # from the parent itself: a best exists, so dues count

    def child():
        forwarder.send_due(1)
        for k in range(100_000):
            forwarder.send_best(float(k), [float(k)] * 8)

    pid = _fork(child)
    assert entered.wait(JOIN)
    status = _exited(pid, JOIN)
    stuck.set()
    forwarder.close(JOIN)
    assert status == 0, "the child blocked on a full pipe"
    assert not forwarder.listener.is_alive()
