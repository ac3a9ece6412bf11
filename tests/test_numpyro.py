"""NumPyro's own MCMC loop with ``live_kernel``: real NUTS/SA runs on JAX's CPU backend."""

from __future__ import annotations

import threading

import numpy as np
import pytest

jax = pytest.importorskip("jax")
numpyro = pytest.importorskip("numpyro")
dist = pytest.importorskip("numpyro.distributions")
from example_loader import run_example_script  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from numpyro.infer import AIES, MCMC, NUTS, SA  # noqa: E402

from autofit_jaxviz.numpyro import LiveState, live_kernel  # noqa: E402

WARMUP, SAMPLES = 150, 200


def line_model(x, y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 10.0))
    b = numpyro.sample("b", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.deterministic("twice_a", 2 * a)
    numpyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def line_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, 60, dtype=np.float32)
    return x, (1.0 + 2.0 * x + 0.1 * rng.normal(size=60)).astype(np.float32)


class Recorder:
    """A real matplotlib draw that also keeps every fit it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.fits: list = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, best) -> Figure:
        with self.lock:
            self.fits.append(best)
        if self.fail:
            raise RuntimeError("this draw always fails")
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().set_title(f"{best.log_likelihood:.2f}")
        return fig


def run_mcmc(kernel, chains: int = 1, chain_method: str = "sequential", **options) -> MCMC:
    x, y = line_data()
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, num_chains=chains,
                chain_method=chain_method, progress_bar=False, **options)
    mcmc.run(jax.random.PRNGKey(0), x, y=y, extra_fields=("potential_energy",))
    return mcmc


def best_sample(mcmc: MCMC) -> tuple[float, dict[str, float]]:
    energy = np.asarray(mcmc.get_extra_fields()["potential_energy"])
    i = int(np.argmin(energy))
    return float(-energy[i]), {k: float(np.asarray(v)[i]) for k, v in mcmc.get_samples().items()}


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_last_picture_is_the_best_sample_the_run_returns(tmp_path, chain_method):
    draw = Recorder()
    kernel = live_kernel(NUTS(line_model), draw, image=tmp_path / "fit.png", backend="thread")
    mcmc = run_mcmc(kernel, chains=2, chain_method=chain_method)
    assert kernel.close(mcmc, timeout=60)
    log_density, sample = best_sample(mcmc)
    last = draw.fits[-1]
    assert last.log_likelihood == pytest.approx(log_density, rel=1e-6)
    assert {k: float(v) for k, v in last.parameters.items()} == pytest.approx(
        {**sample, "twice_a": 2 * sample["a"]}, rel=1e-5)
    # the parameters are the model's constrained sites: sigma is positive
    assert float(last.parameters["sigma"]) > 0
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    # no storm: a few callbacks per improvement, nothing like one per step
    steps = 2 * (WARMUP + SAMPLES)
    assert 2 <= kernel.callbacks < steps / 10
    # the collected fields and the last state read as NUMPyro's own
    assert isinstance(mcmc.last_state, LiveState)
    assert set(mcmc.last_state.z) == {"a", "b", "sigma"}


def test_sample_adaptive_kernel_and_warmup_thinning(tmp_path):
    draw = Recorder()
    kernel = live_kernel(SA(line_model), draw, every=50, image=tmp_path / "fit.png",
                         backend="thread")
    mcmc = run_mcmc(kernel)
    assert kernel.close(mcmc, timeout=60)
    log_density, _ = best_sample(mcmc)
    assert draw.fits[-1].log_likelihood == pytest.approx(log_density, rel=1e-6)
    warmup_callbacks = kernel._phases.warmup.sink.stats().received
    assert 1 <= warmup_callbacks <= WARMUP // 50 + 1


def test_warmup_then_run_and_post_warmup_state(tmp_path):
    draw = Recorder()
    kernel = live_kernel(NUTS(line_model), draw, image=tmp_path / "fit.png", backend="thread")
    x, y = line_data()
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), x, y=y)  # NumPyro's _replace(rng_key=...) on our state
    mcmc.run(jax.random.PRNGKey(1), x, y=y, extra_fields=("potential_energy",))
    mcmc.post_warmup_state = mcmc.last_state
    assert isinstance(mcmc.post_warmup_state, LiveState)
    assert kernel.close(mcmc, timeout=60)
    log_density, _ = best_sample(mcmc)
    assert draw.fits[-1].log_likelihood == pytest.approx(log_density, rel=1e-6)
    assert mcmc.last_state._replace(rng_key=jax.random.PRNGKey(2)).tracker is \
        mcmc.last_state.tracker


def test_a_draw_that_raises_does_not_stop_the_run(tmp_path, caplog):
    draw = Recorder(fail=True)
    kernel = live_kernel(NUTS(line_model), draw, image=tmp_path / "fit.png", backend="thread")
    mcmc = run_mcmc(kernel)
    kernel.close(mcmc, timeout=60)
    assert mcmc.get_samples()["a"].shape == (SAMPLES,)
    assert kernel.view.stats.failed >= 1 and kernel.view.stats.rendered == 0
    assert "this draw always fails" in caplog.text
    assert not (tmp_path / "fit.png").exists()


def test_bad_kernels_are_named():
    with pytest.raises(TypeError, match="needs a NumPyro MCMCKernel.*got str"):
        live_kernel("NUTS", Recorder())
    with pytest.raises(TypeError, match="ensemble kernels \\(AIES\\)"):
        live_kernel(AIES(line_model), Recorder())
    with pytest.raises(TypeError, match="draw must be callable"):
        live_kernel(NUTS(line_model), "draw")
    with pytest.raises(ValueError, match="every must be an integer >= 1, got -1"):
        live_kernel(NUTS(line_model), Recorder(), every=-1)


@pytest.mark.slow
@pytest.mark.parametrize("chains", [["--chain-method", "sequential"],
                                    ["--chains", "2", "--chain-method", "parallel"]])
def test_example_draws_the_best_sample_in_a_render_process(tmp_path, chains):
    _, summary = run_example_script("numpyro_sine", tmp_path, *chains, "--warmup", "200",
                                    "--samples", "300")
    assert summary["drawn_log_density"] == pytest.approx(summary["best_log_density"], rel=1e-6)
    assert summary["drawn"] == pytest.approx(summary["best"], rel=1e-5)
    assert summary["images"] >= 1 and summary["callbacks"] < 200
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
