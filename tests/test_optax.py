"""optax with ``live_optimizer``: a vmapped multi-start Adam run in one jitted scan
(``examples/optax_multistart.py``), and the plain loops a user writes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from example_loader import load_example, run_example_script  # noqa: E402

from autofit_jaxviz.optax import live_optimizer  # noqa: E402


def test_multistart_draws_the_best_start(tmp_path):
    example = load_example("optax_multistart")
    summary = example.run(starts=16, steps=600, every=25, backend="thread",
                          image=str(tmp_path / "fit.png"))
    # the final picture is the lowest loss any start reached, even if `every` held it back
    assert summary["drawn_loss"] == pytest.approx(summary["best_loss"], rel=1e-6)
    # one callback per `every` updates at most, for all 16 starts together
    assert 1 <= summary["callbacks"] <= 600 // 25 + 1
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_while_loop_optimiser_draws_the_minimum(tmp_path):
    drawn = []
    # with momentum the iterate overshoots the minimum and oscillates round it,
    # so the last update is not the best one
    optimizer = live_optimizer(optax.sgd(0.3, momentum=0.9),
                               lambda best: drawn.append(best) or b"\x89PNG",
                               every=1, image=tmp_path / "fit.png", backend="thread")

    def loss_fn(p):  # minimum 1.0 at w = 3
        return (p["w"] - 3.0) ** 2 + 1.0

    @jax.jit
    def fit(p):
        def body(carry):
            i, p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = optimizer.update(g, s, p, value=loss)
            return i + 1, optax.apply_updates(p, u), s
        return jax.lax.while_loop(lambda c: c[0] < 40, body, (0, p, optimizer.init(p)))

    _, params, state = fit({"w": jnp.float32(0.0)})
    assert optimizer.close(state, timeout=30)
    # the losses the loop saw, replayed: the picture is their minimum, not the last
    w, velocity, seen = 0.0, 0.0, []
    for _ in range(40):
        seen.append((w - 3.0) ** 2 + 1.0)
        velocity = 0.9 * velocity + 2 * (w - 3.0)
        w -= 0.3 * velocity
    assert min(seen) < seen[-1]
    assert -optimizer.view.drawn.log_likelihood == pytest.approx(min(seen), rel=1e-4)
    received = optimizer.view.sink.stats().received
    improvements = sum(loss < min(seen[:i], default=np.inf) for i, loss in enumerate(seen))
    assert received <= improvements + 1  # a callback per improvement, and the final report


def test_a_draw_that_raises_does_not_stop_the_run(tmp_path, caplog):
    called = threading.Event()

    def draw(best):
        called.set()
        raise RuntimeError("no picture today")

    optimizer = live_optimizer(optax.adam(0.1), draw, image=tmp_path / "fit.png",
                               backend="thread")
    p = {"w": jnp.zeros(3)}
    state = optimizer.init(p)

    @jax.jit
    def step(p, state):
        loss, g = jax.value_and_grad(lambda q: jnp.sum((q["w"] - 1.0) ** 2))(p)
        u, state = optimizer.update(g, state, p, value=loss)
        return optax.apply_updates(p, u), state

    for _ in range(60):
        p, state = step(p, state)
    optimizer.close(state, timeout=30)
    assert called.is_set() and np.allclose(np.asarray(p["w"]), 1.0, atol=0.1)
    assert optimizer.view.stats.failed >= 1
    assert "no picture today" in caplog.text


def test_a_draw_that_cannot_be_sent_is_drawn_in_a_thread_saying_why(tmp_path, caplog):
    lock = threading.Lock()

    def draw(best):  # holds a lock: it cannot go to a render process
        with lock:
            return b"\x89PNG"

    optimizer = live_optimizer(optax.sgd(0.1), draw, every=1, image=tmp_path / "fit.png",
                               backend="process")
    p = {"w": jnp.zeros(2)}
    state = optimizer.init(p)
    loss, g = jax.value_and_grad(lambda q: jnp.sum((q["w"] - 1.0) ** 2))(p)
    _, state = optimizer.update(g, state, p, value=loss)
    assert optimizer.close(state, timeout=30)
    assert optimizer.view.stats.rendered >= 1 and optimizer.view.drawn is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cannot be sent to a render process" in m and "lock" in m
               and "rendering in a thread instead" in m for m in warnings), warnings


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="needs an optax GradientTransformation.*got function"):
        live_optimizer(lambda g: g, lambda best: None)
    optimizer = live_optimizer(optax.adam(0.1), lambda best: None, image=tmp_path / "f.png",
                               backend="thread")
    state = optimizer.init({"w": jnp.zeros(2)})
    with pytest.raises(TypeError, match="needs params and value=loss.*value=None"):
        optimizer.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        live_optimizer(optax.adam(0.1), lambda best: None, every=0)
    with pytest.raises(ValueError, match="^every must be an integer >= 1, got 'often'"):
        live_optimizer(optax.adam(0.1), lambda best: None, every="often")
    optimizer.close()


_SHARE = "--render-budget must be a share of one core, > 0 and <= 1, got "


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--learning-rate", "0", "--learning-rate must be a finite number > 0, got 0.0"),
    ("--learning-rate", "inf", "--learning-rate must be a finite number > 0, got inf"),
    ("--render-budget", "0", _SHARE + "0.0"),
    ("--render-budget", "nan", _SHARE + "nan"),
    ("--render-budget", "2", _SHARE + "2.0"),
])
def test_the_example_rejects_bad_rates_and_budgets_naming_them(capsys, flag, value, message):
    example = load_example("optax_multistart")
    with pytest.raises(SystemExit):
        example.main(["--hook", "off", flag, value])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_example_runs_in_a_render_process(tmp_path):
    stdout, summary = run_example_script("optax_multistart", tmp_path, "--steps", "500",
                                         "--render-budget", "0.5")
    assert summary["drawn_loss"] == pytest.approx(summary["best_loss"], rel=1e-6)
    assert 0.0 <= summary["render_share"] <= 1.0
    assert "pictures of the best start in" in stdout
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_in_a_notebook_one_image_updates_in_place_in_the_running_cell(tmp_path):
    from importlib.metadata import version

    from test_display import KernelFlavour, run_notebook

    fit = """
        import jax, jax.numpy as jnp, optax
        from matplotlib.figure import Figure
        from autofit_jaxviz.optax import live_optimizer

        def draw(best):                      # defined in the notebook: sent by value
            fig = Figure(figsize=(3, 2))
            fig.add_subplot().set_title(f"loss {-best.log_likelihood:.4f}")
            return fig

        optimizer = live_optimizer(optax.adam(0.05), draw, every=10)
        def loss_fn(p):
            return jnp.sum((p["w"] - jnp.arange(3.0)) ** 2)
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = optimizer.update(g, s, p, value=loss)
            return (optax.apply_updates(p, u), s), loss
        p0 = {"w": jnp.zeros(3)}
        (p, state), losses = jax.jit(lambda p: jax.lax.scan(
            step, (p, optimizer.init(p)), None, length=300))(p0)
        done = optimizer.close(state)
    """
    after = "print('images', done, optimizer.view.stats.rendered, optimizer.view.worker.backend)"
    run = run_notebook(tmp_path, KernelFlavour("venv", version("ipykernel"), ()),
                       [("fit", fit), ("after", after)], env={})
    outputs = run.cells["fit"].outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(outputs) == 1, outputs
    assert len(run.messages("update_display_data")) >= 1
    printed = "".join(o.get("text", "") for o in run.cells["after"].outputs)
    assert "images True" in printed and "process" in printed and not any(
        "image/png" in o.get("data", {}) for o in run.cells["after"].outputs)
