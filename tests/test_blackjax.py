"""BlackJAX's stock ``window_adaptation`` and ``run_inference_algorithm`` with
``live_algorithm``: real NUTS on JAX's CPU backend (``examples/blackjax_sine.py``)."""

from __future__ import annotations

import threading

import pytest

jax = pytest.importorskip("jax")
blackjax = pytest.importorskip("blackjax")
import jax.numpy as jnp  # noqa: E402
from example_loader import load_example, run_example_script  # noqa: E402

from autofit_jaxviz.blackjax import live_algorithm  # noqa: E402


@pytest.mark.parametrize("chains", [1, 3])
def test_last_picture_is_the_best_sample_the_run_returns(tmp_path, chains):
    example = load_example("blackjax_sine")
    summary = example.run(chains=chains, warmup=200, samples=300, points=200,
                          backend="thread", image=str(tmp_path / "fit.png"))
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert summary["drawn"] == pytest.approx(summary["best"], rel=1e-5)
    assert summary["images"] >= 1
    # no storm: vmapped chains call back once per step at most, and only on improvement
    assert 2 <= summary["callbacks"] < (200 + 300) / 5
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_a_draw_that_raises_does_not_stop_the_run(tmp_path, caplog):
    calls = threading.Event()

    def draw(best):
        calls.set()
        raise ValueError("broken draw")

    example = load_example("blackjax_sine")
    x, y = example.simulate(100)
    logdensity = example.make_logdensity(jnp.asarray(x), jnp.asarray(y))
    nuts = live_algorithm(blackjax.nuts, draw, image=tmp_path / "fit.png", backend="thread")
    (state, parameters), _ = blackjax.window_adaptation(nuts, logdensity).run(
        jax.random.PRNGKey(0), example.START, num_steps=100)
    state, (history, _) = blackjax.util.run_inference_algorithm(
        jax.random.PRNGKey(1), nuts(logdensity, **parameters), 100, initial_state=state)
    nuts.close(state)
    assert calls.is_set() and history.logdensity.shape == (100,)
    assert nuts.view.stats.failed >= 1 and nuts.view.stats.rendered == 0
    assert "broken draw" in caplog.text


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="needs a BlackJAX algorithm such as blackjax.nuts.*got"):
        live_algorithm(blackjax.nuts.init, lambda best: None)
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        live_algorithm(blackjax.nuts, lambda best: None, every=0)
    nuts = live_algorithm(blackjax.nuts, lambda best: None, image=tmp_path / "f.png",
                          backend="thread")
    import inspect  # BlackJAX's adaptation reads these signatures: they are the algorithm's
    assert inspect.signature(nuts.build_kernel) == inspect.signature(blackjax.nuts.build_kernel)
    kernel = nuts.build_kernel()
    plain = blackjax.nuts.init({"a": 0.0}, lambda p: -p["a"] ** 2)
    with pytest.raises(TypeError, match="needs the state its own init built.*HMCState"):
        kernel(jax.random.PRNGKey(0), plain, lambda p: -p["a"] ** 2, 0.1, jnp.ones(1))
    nuts.close()


@pytest.mark.slow
def test_example_runs_in_a_render_process(tmp_path):
    stdout, summary = run_example_script("blackjax_sine", tmp_path, "--warmup", "200",
                                         "--samples", "300", "--chains", "2")
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert "pictures of the best fit in" in stdout
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
