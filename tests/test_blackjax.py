"""BlackJAX's stock ``window_adaptation`` and ``run_inference_algorithm`` with
``live_algorithm``: real NUTS on JAX's CPU backend (``examples/blackjax_sine.py``)."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

jax = pytest.importorskip("jax")
blackjax = pytest.importorskip("blackjax")
import jax.numpy as jnp  # noqa: E402
from example_loader import load_example, run_example_script  # noqa: E402

from autofit_jaxviz.blackjax import live_algorithm  # noqa: E402
from autofit_jaxviz.live import FinalFit  # noqa: E402


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
    with pytest.raises(ValueError, match="progress_every must be an integer >= 1, got 0"):
        live_algorithm(blackjax.nuts, lambda best: None, progress=print, progress_every=0)
    with pytest.raises(TypeError, match="progress must be a function of the steps done, got 5"):
        live_algorithm(blackjax.nuts, lambda best: None, progress=5)
    with pytest.raises(TypeError, match="score must be a function of the algorithm's state, "
                                        "got 'logdensity'"):
        live_algorithm(blackjax.nuts, lambda best: None, score="logdensity")
    with pytest.raises(ValueError, match="progress_every=10 needs progress="):
        live_algorithm(blackjax.nuts, lambda best: None, progress_every=10)
    nuts = live_algorithm(blackjax.nuts, lambda best: None, image=tmp_path / "f.png",
                          backend="thread")
    import inspect  # BlackJAX's adaptation reads these signatures: they are the algorithm's
    assert inspect.signature(nuts.build_kernel) == inspect.signature(blackjax.nuts.build_kernel)
    kernel = nuts.build_kernel()
    plain = blackjax.nuts.init({"a": 0.0}, lambda p: -p["a"] ** 2)
    with pytest.raises(TypeError, match="needs the state its own init built.*HMCState"):
        kernel(jax.random.PRNGKey(0), plain, lambda p: -p["a"] ** 2, 0.1, jnp.ones(1))
    nuts.close()


def _sine(points=100):
    example = load_example("blackjax_sine")
    x, y = example.simulate(points)
    return example, example.make_logdensity(jnp.asarray(x), jnp.asarray(y))


def test_score_chooses_the_best_and_progress_ticks_once_per_step_for_vmapped_chains(tmp_path):
    example, logdensity = _sine()
    ticks = []

    def score(state):  # not the log density: the sample closest to amplitude 1.2
        return -(state.position["amplitude"] - 1.2) ** 2

    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", score=score, progress=ticks.append,
                          progress_every=10)
    (state, parameters), _ = blackjax.window_adaptation(nuts, logdensity).run(
        jax.random.PRNGKey(0), example.START, num_steps=50)
    sampler = nuts(logdensity, **parameters)
    chains = 3

    @jax.jit
    def sample(states, key):
        def one_step(states, key):
            states, _ = jax.vmap(sampler.step)(jax.random.split(key, chains), states)
            return states, states.position["amplitude"]
        return jax.lax.scan(one_step, states, jax.random.split(key, 100))

    states, amplitudes = sample(jax.vmap(lambda _: state)(jnp.arange(chains)),
                                jax.random.PRNGKey(1))
    nuts.close(states)
    # 50 warm-up steps, then 100 vmapped steps of 3 chains: one tick per 10 steps, not per chain
    assert sorted(ticks) == list(range(10, 151, 10))
    assert nuts.progress.calls == 15 and nuts.progress.failed == 0
    flat = np.asarray(amplitudes).reshape(-1)
    closest = flat[np.argmax(-(flat - 1.2) ** 2)]  # of the samples: the warm-up was forgotten
    assert nuts.view.drawn is not None
    assert float(nuts.view.drawn.parameters["amplitude"]) == pytest.approx(float(closest))
    assert nuts.view.drawn.log_likelihood == pytest.approx(-(float(closest) - 1.2) ** 2, rel=1e-4)


@pytest.mark.parametrize(("score", "got"), [
    (lambda state: state.position, "float32 of shape (3,)"),  # a forgotten sum
    (lambda state: jnp.int32(1), "int32 of shape ()"),
])
def test_a_score_that_is_not_a_float_scalar_is_named(tmp_path, score, got):
    nuts = live_algorithm(blackjax.nuts, lambda best: None, image=tmp_path / "f.png",
                          backend="thread", score=score)
    with pytest.raises(TypeError, match=r"score\(state\) must return a float scalar .*got "
                                        + got.replace("(", r"\(").replace(")", r"\)")):
        nuts.init(jnp.zeros(3, jnp.float32), lambda p: -jnp.sum(p**2))
    nuts.close()


@pytest.mark.parametrize(("reports", "runner"), [
    ("in_loop", "blackjax"), ("in_loop", "chunks"), ("between_chunks", "chunks")])
def test_a_progress_callback_that_raises_does_not_stop_the_run(tmp_path, caplog, reports, runner):
    example, logdensity = _sine()

    def progress(steps):
        raise RuntimeError(f"broken progress at {steps}")

    in_loop = reports == "in_loop"
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", progress=progress, reports=reports,
                          progress_every=7 if in_loop else None)
    sampler = nuts(logdensity, step_size=0.05, inverse_mass_matrix=jnp.ones(5))
    if runner == "blackjax":
        run = blackjax.util.run_inference_algorithm
    else:
        run = functools.partial(nuts.run_inference_algorithm, chunk_steps=7)
    state, (history, _) = run(jax.random.PRNGKey(1), sampler, 30, initial_position=example.START)
    nuts.close(state)
    assert history.logdensity.shape == (30,)
    # in the loop every 7 steps (7, 14, 21, 28; not again between chunks), or after
    # each chunk of 7 (7, 14, 21, 28, 30)
    assert nuts.progress.calls == nuts.progress.failed == (4 if in_loop else 5)
    assert "broken progress at 7" in caplog.text


def _jaxpr_has_callback(fn, *args):
    return "callback" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("chains", [1, 3])
def test_between_chunks_gives_blackjax_samples_and_no_callback_in_the_loop(tmp_path, chains):
    example, logdensity = _sine()
    ticks = []
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", reports="between_chunks", progress=ticks.append)
    warmup = blackjax.window_adaptation(nuts, logdensity)
    (state, parameters), _ = warmup.run(jax.random.PRNGKey(0), example.START, num_steps=50)
    assert nuts.callbacks == 0  # the warm-up's loop reported nothing
    sampler = nuts(logdensity, **parameters)
    assert not _jaxpr_has_callback(sampler.step, jax.random.PRNGKey(2), state)
    kernel = nuts.build_kernel()  # what the warm-up steps
    assert not _jaxpr_has_callback(
        lambda k, s: kernel(k, s, logdensity, parameters["step_size"],
                            parameters["inverse_mass_matrix"]), jax.random.PRNGKey(2), state)
    plain = blackjax.nuts(logdensity, **parameters)
    key = jax.random.PRNGKey(1)
    if chains == 1:
        final, (history, _) = nuts.run_inference_algorithm(key, sampler, 300,
                                                           initial_state=state, chunk_steps=70)
        _, (stock, _) = blackjax.util.run_inference_algorithm(key, plain, 300,
                                                               initial_state=state.inner)
    else:
        keys = jax.random.split(key, chains)
        states = jax.vmap(lambda _: state)(jnp.arange(chains))
        final, (history, _) = nuts.run_inference_algorithm(keys, sampler, 300,
                                                           initial_state=states, chunk_steps=70)
        _, (stock, _) = jax.vmap(lambda k, s: blackjax.util.run_inference_algorithm(
            k, plain, 300, initial_state=s))(keys, states.inner)
    # BlackJAX's own keys per step: the same chain(s), chains first as under jax.vmap (equal
    # to the bit with this JAX/XLA; another XLA may round the two programs differently)
    np.testing.assert_array_equal(np.asarray(history.logdensity), np.asarray(stock.logdensity))
    assert history.logdensity.shape == ((300,) if chains == 1 else (chains, 300))
    # five chunks of at most 70 steps: one progress call and one read each, plus the warm-up's
    assert ticks == [120, 190, 260, 330, 350]
    assert nuts.callbacks == 1 + 5
    nuts.close(final)
    best = float(np.max(np.asarray(history.logdensity)))
    assert nuts.view.drawn.log_likelihood == pytest.approx(best, rel=1e-6)


def test_between_chunks_with_the_stock_loop_draws_the_final_state_at_close(tmp_path):
    example, logdensity = _sine()
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", reports="between_chunks")
    (state, parameters), _ = blackjax.window_adaptation(nuts, logdensity).run(
        jax.random.PRNGKey(0), example.START, num_steps=50)
    final, (history, _) = blackjax.util.run_inference_algorithm(
        jax.random.PRNGKey(1), nuts(logdensity, **parameters), 100, initial_state=state)
    assert nuts.callbacks == 0
    assert nuts.close(final)
    # the final state's best, read once by the host, and drawn as the final picture
    assert nuts.callbacks == 1 and isinstance(nuts.view.drawn, FinalFit)
    assert nuts.view.drawn.log_likelihood == pytest.approx(
        float(np.max(np.asarray(history.logdensity))), rel=1e-6)


def test_between_chunks_adapts_the_chunks_and_starts_from_a_position(tmp_path):
    example, logdensity = _sine()
    ticks = []
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", reports="between_chunks", progress=ticks.append)
    sampler = nuts(logdensity, step_size=0.05, inverse_mass_matrix=jnp.ones(5))
    key = jax.random.key(3)  # a typed key, as BlackJAX takes too
    final, (history, _) = nuts.run_inference_algorithm(key, sampler, 400,
                                                       initial_position=example.START)
    _, (stock, _) = blackjax.util.run_inference_algorithm(
        key, blackjax.nuts(logdensity, step_size=0.05, inverse_mass_matrix=jnp.ones(5)), 400,
        initial_position=example.START)
    np.testing.assert_array_equal(np.asarray(history.logdensity), np.asarray(stock.logdensity))
    # two chunks of one step before the step rate is known, then growing (the sizing itself
    # is tested with a scripted clock in test_chunked.py), to the end
    assert ticks[:2] == [1, 2] and ticks[-1] == 400
    assert ticks == sorted(set(ticks)) and len(ticks) < 50
    nuts.close(final)
    assert nuts.view.drawn.log_likelihood == pytest.approx(
        float(np.max(np.asarray(history.logdensity))), rel=1e-6)


def test_between_chunks_starts_chains_from_positions_as_vmapped_blackjax_does(tmp_path):
    example, logdensity = _sine()
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", reports="between_chunks")
    options = {"step_size": 0.05, "inverse_mass_matrix": jnp.ones(5)}
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    positions = {name: jnp.asarray([value, value + 0.1]) for name, value in example.START.items()}
    final, (history, _) = nuts.run_inference_algorithm(
        keys, nuts(logdensity, **options), 20, initial_position=positions)
    _, (stock, _) = jax.vmap(lambda k, p: blackjax.util.run_inference_algorithm(
        k, blackjax.nuts(logdensity, **options), 20, initial_position=p))(keys, positions)
    np.testing.assert_array_equal(np.asarray(history.logdensity), np.asarray(stock.logdensity))
    assert history.logdensity.shape == (2, 20)
    nuts.close((final, history))  # any pytree holding the final state
    lls = np.asarray(history.logdensity)
    assert nuts.view.drawn.log_likelihood == pytest.approx(float(lls.max()), rel=1e-6)
    # a history of states alone, on a fresh view: its best of every chain and step
    fresh = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "g.png",
                           backend="thread", reports="between_chunks")
    fresh.close(history)
    chain, step = np.unravel_index(np.argmax(lls), lls.shape)
    assert fresh.view.drawn.log_likelihood == pytest.approx(float(lls.max()), rel=1e-6)
    assert fresh.view.drawn.step == step  # steps counted from the chain's start, 0 first
    assert float(fresh.view.drawn.parameters["amplitude"]) == pytest.approx(
        float(history.position["amplitude"][chain, step]))
    with pytest.raises(ValueError, match=r"one position per chain: got 2 keys and "
                                         r"initial_position with leading sizes \[3\]"):
        nuts.run_inference_algorithm(keys, nuts(logdensity, **options), 5, initial_position={
            name: jnp.full(3, value) for name, value in example.START.items()})


def test_between_chunks_bad_arguments_are_named(tmp_path):
    draw = lambda best: None  # noqa: E731
    with pytest.raises(ValueError, match="reports must be one of 'in_loop', 'between_chunks', "
                                         "got 'chunks'"):
        live_algorithm(blackjax.nuts, draw, reports="chunks")
    with pytest.raises(ValueError, match="every=5 thins reports made inside the loop"):
        live_algorithm(blackjax.nuts, draw, reports="between_chunks", every=5)
    with pytest.raises(ValueError, match="progress_every=10 thins reports"):
        live_algorithm(blackjax.nuts, draw, reports="between_chunks", progress=print,
                       progress_every=10)
    example, logdensity = _sine()
    nuts = live_algorithm(blackjax.nuts, draw, image=tmp_path / "f.png", backend="thread",
                          reports="between_chunks")
    sampler = nuts(logdensity, step_size=0.01, inverse_mass_matrix=jnp.ones(5))
    state = sampler.init(example.START)
    key = jax.random.PRNGKey(0)
    run = nuts.run_inference_algorithm
    with pytest.raises(ValueError, match="chunk_steps must be an integer >= 1, got 0"):
        run(key, sampler, 10, initial_state=state, chunk_steps=0)
    with pytest.raises(ValueError, match="chunk_seconds must be a positive number .*got -1"):
        run(key, sampler, 10, initial_state=state, chunk_seconds=-1)
    with pytest.raises(ValueError, match=r"give chunk_steps \(5\) or chunk_seconds \(1\)"):
        run(key, sampler, 10, initial_state=state, chunk_steps=5, chunk_seconds=1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0, got -1"):
        run(key, sampler, -1, initial_state=state)
    with pytest.raises(TypeError, match="needs this live algorithm's sampler .*got Sampling"):
        run(key, blackjax.nuts(logdensity, step_size=0.01, inverse_mass_matrix=jnp.ones(5)),
            10, initial_state=state)
    with pytest.raises(ValueError, match="initial_state or initial_position .*got both"):
        run(key, sampler, 10, initial_state=state, initial_position=example.START)
    with pytest.raises(ValueError, match="initial_state or initial_position .*got neither"):
        run(key, sampler, 10)
    with pytest.raises(TypeError, match="call it outside jax.jit / jax.vmap"):
        jax.jit(lambda k, s: run(k, sampler, 10, initial_state=s))(key, state)
    with pytest.raises(ValueError, match="one key per chain: got a batch of 3 keys for one st"):
        run(jax.random.split(key, 3), sampler, 10, initial_state=state)
    batch = jax.vmap(lambda _: state)(jnp.arange(2))
    with pytest.raises(ValueError, match="one key per chain: got one key for a batch of 2 st"):
        run(key, sampler, 10, initial_state=batch)
    with pytest.raises(ValueError, match="got a batch of 3 keys for a batch of 2 states"):
        run(jax.random.split(key, 3), sampler, 10, initial_state=batch)
    with pytest.raises(ValueError, match=r"rng_key: got an empty batch of keys \(shape \(0, 2\)"):
        run(jax.random.split(key, 0), sampler, 10, initial_state=batch)
    with pytest.raises(TypeError, match="needs rng_key: one key, or one per chain"):
        run(None, sampler, 10, initial_state=state)
    nuts.close()


def test_between_chunks_with_no_steps_returns_the_state_as_blackjax_does(tmp_path):
    example, logdensity = _sine()
    nuts = live_algorithm(blackjax.nuts, example.no_draw, image=tmp_path / "f.png",
                          backend="thread", reports="between_chunks")
    sampler = nuts(logdensity, step_size=0.01, inverse_mass_matrix=jnp.ones(5))
    state = sampler.init(example.START)
    final, (history, _) = nuts.run_inference_algorithm(jax.random.PRNGKey(0), sampler, 0,
                                                       initial_state=state)
    assert history.logdensity.shape == (0,) and float(final.logdensity) == float(state.logdensity)
    assert nuts.close((final, history))  # an empty history in the result: nothing to read
    # the starting state's best, read before the (empty) run
    assert nuts.view.drawn.log_likelihood == pytest.approx(float(state.logdensity), rel=1e-6)


@pytest.mark.slow
def test_example_runs_in_a_render_process(tmp_path):
    stdout, summary = run_example_script("blackjax_sine", tmp_path, "--warmup", "200",
                                         "--samples", "300", "--chains", "2")
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert "pictures of the best fit in" in stdout
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


# SMC: the stock adaptive tempered SMC, in a jitted while_loop (examples/blackjax_smc_sine.py)

def test_smc_last_picture_is_the_best_particle_the_run_had(tmp_path):
    example = load_example("blackjax_smc_sine")
    summary = example.run(particles=200, mcmc_steps=5, points=200, backend="thread",
                          image=str(tmp_path / "fit.png"), reference=True)
    assert summary["smc_steps"] >= 3  # tempered over several populations
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert summary["drawn"] == pytest.approx(summary["best"], rel=1e-5)
    assert summary["drawn_step"] == summary["best_step"] >= 1
    # no storm: one vmapped evaluation per step and a callback only on improvement
    assert 1 <= summary["callbacks"] <= summary["smc_steps"]
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["tempered_smc", "persistent_sampling_smc"])
def test_smc_with_a_fixed_schedule_and_a_draw_that_raises(tmp_path, caplog, name):
    from blackjax.smc import extend_params, resampling

    from autofit_jaxviz.blackjax import live_smc

    example = load_example("blackjax_smc_sine")
    x, y = (jnp.asarray(a, float) for a in example.simulate(100))
    calls = threading.Event()

    def draw(best):
        calls.set()
        raise ValueError("broken draw")

    smc = live_smc(getattr(blackjax, name), draw, image=tmp_path / "fit.png", backend="thread")
    schedule_length = (6,) if name == "persistent_sampling_smc" else ()
    algorithm = smc(example.log_prior, example.make_loglikelihood(x, y), *schedule_length,
                    blackjax.hmc.build_kernel(), blackjax.hmc.init,
                    extend_params({"step_size": 1e-2, "inverse_mass_matrix": jnp.ones(5),
                                   "num_integration_steps": 5}),
                    resampling.systematic, num_mcmc_steps=3)
    state = algorithm.init(example.prior_draws(jax.random.PRNGKey(0), 100))
    schedule = jnp.linspace(0.1, 1.0, 6)

    def one_step(state, inputs):
        key, tempering = inputs
        state, _ = algorithm.step(key, state, tempering)
        return state, state.tempering_param

    state, temperatures = jax.jit(lambda s: jax.lax.scan(
        one_step, s, (jax.random.split(jax.random.PRNGKey(1), 6), schedule)))(state)
    smc.close(state)
    assert calls.is_set() and temperatures[-1] == pytest.approx(1.0)
    assert smc.view.stats.failed >= 1 and smc.view.stats.rendered == 0
    assert "broken draw" in caplog.text


def test_smc_bad_arguments_are_named(tmp_path):
    from blackjax.smc import extend_params, resampling

    from autofit_jaxviz.blackjax import live_smc

    with pytest.raises(TypeError, match="needs a BlackJAX SMC algorithm.*got function"):
        live_smc(blackjax.nuts.init, lambda best: None)
    with pytest.raises(TypeError, match="transform must be a function.*got 3"):
        live_smc(blackjax.adaptive_tempered_smc, lambda best: None, transform=3)
    smc = live_smc(blackjax.adaptive_tempered_smc, lambda best: None, image=tmp_path / "f.png",
                   backend="thread")
    algorithm = smc(lambda p: 0.0, lambda p: -p**2, blackjax.hmc.build_kernel(),
                    blackjax.hmc.init, extend_params({"step_size": 0.1, "inverse_mass_matrix":
                                                      jnp.ones(1), "num_integration_steps": 3}),
                    resampling.systematic, 0.5)
    plain = blackjax.adaptive_tempered_smc.init(jnp.zeros(10))
    with pytest.raises(TypeError, match="live_smc step needs the state its own init.*TemperedSMC"):
        algorithm.step(jax.random.PRNGKey(0), plain)
    smc.close()


@pytest.mark.slow
def test_smc_example_runs_in_a_render_process(tmp_path):
    stdout, summary = run_example_script("blackjax_smc_sine", tmp_path, "--particles", "300",
                                         "--mcmc-steps", "5", "--reference")
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert "pictures of the best fit in" in stdout
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
