"""Nothing lost under concurrency and at the edges (issue #14's rows of RELIABILITY.md)."""

from __future__ import annotations

import logging
import threading

import autofit as af
import numpy as np
import pytest
from autofit_helpers import MarkedAnalysis, gaussian_data, gaussian_model, read_markers
from autonerves import conf

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.payload import BestFit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
JOIN = 60.0


@pytest.fixture(autouse=True)
def output_and_cleanup(tmp_path, monkeypatch):
    monkeypatch.setattr(conf.instance, "output_path", str(tmp_path / "output"))
    monkeypatch.chdir(tmp_path)
    logging.getLogger("autofit").setLevel(logging.WARNING)
    yield
    live.disable()


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
