"""The demo: its model, renderer, progress line, command line and end-to-end runs.

End-to-end runs use few steps; they check what a user sees (exit code, a valid
PNG of the documented size that was rewritten during the run, the summary)
and count renders through the worker's ``on_rendered`` hook and stats, never
by sleeping or timing.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from autofit_jaxviz import demo
from autofit_jaxviz.__main__ import main
from autofit_jaxviz.demo import DemoFrame, FitRenderer, run_demo, simulate
from autofit_jaxviz.demo.figure import IMAGE_SIZE
from autofit_jaxviz.demo.model import START, TRUTH
from autofit_jaxviz.demo.run import IMAGE_NAME
from autofit_jaxviz.history import read_index, read_status
from autofit_jaxviz.payload import BestFit

REPO = Path(__file__).resolve().parents[1]
# few steps, but enough warm-up for the fit to improve several times
SMALL = ["--steps", "40", "--warmup", "60"]


def _frame(params: np.ndarray, step: int, history: list[tuple[int, float]]) -> DemoFrame:
    observation = simulate(0)
    ll = demo.log_likelihood(params, observation)
    rows = np.array(history + [(step, ll)], float)
    return DemoFrame(BestFit(ll, params, step), rows, elapsed=1.5, total_steps=100, warmup=60)


def _png_shape(path: Path) -> tuple[int, ...]:
    return imread(path).shape


# --------------------------------------------------------------------------- model


def test_numpy_and_jax_models_agree() -> None:
    jnp = pytest.importorskip("jax.numpy")
    x, y = demo.model.pixel_grid()
    for params in (TRUTH, START):
        host = demo.sersic_image(np.asarray(params, np.float64), x, y)
        device = np.asarray(demo.sersic_image(jnp.asarray(params), jnp.asarray(x),
                                              jnp.asarray(y), xp=jnp))
        np.testing.assert_allclose(device, host, rtol=2e-4, atol=1e-5)


def test_simulation_is_seeded_and_truth_beats_start() -> None:
    a, b, c = simulate(0), simulate(0), simulate(1)
    assert a.data.shape == demo.model.IMAGE_SHAPE and a.data.dtype == np.float32
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    truth_ll, start_ll = demo.log_likelihood(TRUTH, a), demo.log_likelihood(START, a)
    assert truth_ll > start_ll + 1000  # the start is far enough off to see the fit improve
    physical = demo.physical_parameters(TRUTH)
    assert physical["radius"] == pytest.approx(1.0)
    assert physical["index"] == pytest.approx(2.0)
    assert 0 < physical["q"] < 1


# --------------------------------------------------------------------------- renderer


def test_renderer_pickles_and_replaces_the_png_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out" / IMAGE_NAME
    renderer = pickle.loads(pickle.dumps(FitRenderer(simulate(0), path)))  # as a child gets it
    first = renderer(_frame(START, 0, []))
    assert first == path
    assert _png_shape(path) == (IMAGE_SIZE[1], IMAGE_SIZE[0], 4)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    renderer(_frame(TRUTH, 50, [(0, demo.log_likelihood(START, simulate(0)))]))
    assert hashlib.sha256(path.read_bytes()).hexdigest() != before
    assert sorted(p.name for p in path.parent.iterdir()) == [IMAGE_NAME]  # no temporary left


def test_figure_is_labelled_with_symmetric_residual_limits() -> None:
    renderer = FitRenderer(simulate(0), "unused.png")
    frame = _frame(START, 7, [(0, -5e4)])
    fig = renderer.draw(frame)
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 3
    for ax in image_axes:
        assert "arcsec" in ax.get_xlabel() and "arcsec" in ax.get_ylabel()
        assert ax.get_title()
    low, high = image_axes[2].images[0].get_clim()
    assert low == -high and high > 0
    assert image_axes[2].images[0].get_cmap().name == "RdBu_r"
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 3 and all(ax.get_ylabel() for ax in colorbars)
    history = [ax for ax in fig.axes if not ax.images and ax.get_label() != "<colorbar>"]
    assert len(history) == 1
    assert "step" in history[0].get_xlabel() and "log L" in history[0].get_ylabel()
    title = fig.get_suptitle()
    assert "step 7" in title and "1.5 s" in title and "log L" in title


def test_frame_history_is_append_only_across_growth() -> None:
    class Collect:
        def __init__(self) -> None:
            self.frames: list[DemoFrame] = []

        def submit(self, frame: DemoFrame) -> bool:
            self.frames.append(frame)
            return True

    sink = Collect()
    source = demo.FrameSource(sink, total_steps=1000, warmup=0)  # type: ignore[arg-type]
    for step in range(600):  # past the first buffer
        source.submit(BestFit(float(step), np.zeros(7), step))
    for n, frame in enumerate(sink.frames, start=1):
        assert frame.history.shape == (n, 2)
        assert not frame.history.flags.writeable
        np.testing.assert_array_equal(frame.history[:, 0], np.arange(n))
    assert sink.frames[-1].step == 599 and sink.frames[-1].log_likelihood == 599.0


# --------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_refreshes_one_line_on_a_tty_and_prints_few_lines_otherwise() -> None:
    frame = _frame(TRUTH, 5, [])
    plain = io.StringIO()
    meter = demo.Progress(1000, plain, worker=None)
    for step in range(10, 1001, 10):
        meter.tick(np.int32(step))
    meter.on_rendered(frame, None)
    meter.finish()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert 10 <= len(lines) <= 11
    assert lines[-1].startswith("step 1000/1000 (100%)") and "images 1" in lines[-1]

    tty = _Terminal()
    meter = demo.Progress(1000, tty, worker=None)
    meter.tick(np.int32(10))
    meter.finish()
    assert tty.getvalue().startswith("\rstep") and tty.getvalue().endswith("\n")


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--steps", "0", "positive integer"),
        ("--steps", "-5", "positive integer"),
        ("--steps", "ten", "positive integer"),
        ("--steps", "2.5", "positive integer"),
        ("--warmup", "-1", "integer >= 0"),
        ("--seed", "x1", "integer >= 0"),
        ("--every", "0", "positive integer"),
        ("--backend", "gpu", "choose from"),
        ("--view", "70000", "port 0-65535"),
        ("--view", "web", "port 0-65535"),
    ],
)
def test_bad_options_exit_2_naming_the_value(
    option: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", option, value]) == 2
    err = capsys.readouterr().err
    assert option in err and repr(value) in err and expected in err


def test_output_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main(["demo", "--output", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and str(taken) in err and "folder" in err


def test_unknown_option_missing_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err
    assert main(["demo", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--output", "--steps", "--warmup", "--backend", "--seed", "--no-viz",
                   "--every"):
        assert option in text


def test_run_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        run_demo(tmp_path, steps=0)
    with pytest.raises(ValueError, match="backend must be one of .* got 'gpu'"):
        run_demo(tmp_path, backend="gpu")
    with pytest.raises(TypeError, match="on_rendered must be callable"):
        run_demo(tmp_path, on_rendered="no")  # type: ignore[arg-type]
    # every thins the warm-up's reports: where there is none, it would be ignored
    with pytest.raises(ValueError, match=r"every=5 .* no warm-up \(warmup=0\)"):
        run_demo(tmp_path, every=5, warmup=0)
    with pytest.raises(ValueError, match="every=5 .* no picture"):
        run_demo(tmp_path, every=5, visualize=False)


@pytest.mark.parametrize(("extra", "why"), [(["--warmup", "0"], "--warmup is 0"),
                                            (["--no-viz"], "--no-viz draws nothing")])
def test_every_where_it_would_do_nothing_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], why: str
) -> None:
    pytest.importorskip("blackjax")
    assert main(["demo", "--output", str(tmp_path / "out"), "--every", "5", *extra]) == 2
    assert f"argument --every: 5 thins the warm-up's reports, but {why}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- missing packages

BLOCKED_RUN = textwrap.dedent(
    """
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # `import name` now raises ImportError
    import autofit_jaxviz.demo
    assert "jax" not in sys.modules or sys.modules["jax"] is None  # the demo imports it lazily
    from autofit_jaxviz.__main__ import main
    sys.exit(main(["demo", "--output", sys.argv[2]]))
    """
)


@pytest.mark.parametrize(
    ("blocked", "hint"),
    [("jax", "pip install jax"), ("blackjax", "pip install blackjax")],
)
def test_missing_package_prints_the_install_hint(tmp_path: Path, blocked: str, hint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, blocked, str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert hint in result.stderr
    assert "autofit_jaxviz[demo]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # it stopped before touching the disk


# --------------------------------------------------------------------------- end to end


def test_cli_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("blackjax")
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--seed", "3", *SMALL]) == 0
    stdout = capsys.readouterr().out
    png = out / IMAGE_NAME
    assert _png_shape(png) == (IMAGE_SIZE[1], IMAGE_SIZE[0], 4)
    assert str(png) in stdout and "steps/s" in stdout and "rendered" in stdout
    assert "\r" not in stdout  # captured output is not a terminal: plain lines
    assert sum(line.startswith("step ") for line in stdout.splitlines()) <= 11
    assert sorted(p.name for p in out.iterdir()) == [IMAGE_NAME, "fit_history"]
    assert f"python -m autofit_jaxviz view {out}" in stdout


def test_run_demo_rewrites_the_image_during_the_run(tmp_path: Path) -> None:
    pytest.importorskip("blackjax")
    seen: list[tuple[int, float, str]] = []

    def record(frame: DemoFrame, path: Path) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        seen.append((frame.step, frame.log_likelihood, digest))

    # sync: every improvement the tracker reports is drawn, so the count is deterministic
    result = run_demo(tmp_path, steps=40, warmup=60, backend="sync", every=10,
                      on_rendered=record)
    assert result.image == tmp_path.absolute() / IMAGE_NAME
    assert _png_shape(result.image) == (IMAGE_SIZE[1], IMAGE_SIZE[0], 4)
    assert result.worker_stats is not None
    assert result.worker_stats.rendered == len(seen) >= 2
    assert result.worker_stats.failed == 0
    assert len({digest for _, _, digest in seen}) == len(seen)  # a new picture every time
    steps = [step for step, _, _ in seen]
    assert steps == sorted(steps)  # warm-up's bests first, then the samples'
    # each phase's best only improves; from the first sample on, the picture
    # follows the best *sample* (a warm-up state is not in what the run returns)
    warmup = [ll for step, ll, _ in seen if step < 60]
    sampling = [ll for step, ll, _ in seen if step >= 60]
    assert warmup and sampling
    assert warmup == sorted(warmup) and sampling == sorted(sampling)
    # the final picture is the best sample the run returns (its own trace's argmax)
    assert seen[-1][0] == result.best_step >= 60
    assert seen[-1][1] == pytest.approx(result.best_log_likelihood)
    assert result.best_log_likelihood > demo.log_likelihood(START, simulate(0)) + 1000
    assert result.total_steps == 100 and result.steps_per_second > 0
    # every picture is in the history, with its step and log-likelihood
    entries = read_index(tmp_path / "fit_history")
    assert [(e["step"], e["log_likelihood"]) for e in entries] == [
        (step, pytest.approx(ll)) for step, ll, _ in seen]
    assert [hashlib.sha256((tmp_path / "fit_history" / e["file"]).read_bytes()).hexdigest()
            for e in entries] == [digest for _, _, digest in seen]
    assert read_status(tmp_path / "fit_history")["state"] == "finished"


def test_no_viz_baseline_runs_the_same_chain_without_images(tmp_path: Path) -> None:
    pytest.importorskip("blackjax")
    base = run_demo(tmp_path / "base", steps=20, warmup=30, visualize=False)
    watched = run_demo(tmp_path / "watched", steps=20, warmup=30, backend="thread")
    assert base.image is None and base.worker_stats is None and base.best_step is None
    assert list((tmp_path / "base").iterdir()) == []
    assert watched.image is not None and watched.image.exists()
    # the hook only observes: same gradients, same divergences, and the tracker's
    # best is the best sample of the baseline's own trace
    assert base.gradient_evaluations == watched.gradient_evaluations
    assert base.divergences == watched.divergences
    assert base.best_log_likelihood == pytest.approx(watched.best_log_likelihood, abs=1e-3)
    np.testing.assert_allclose(watched.best_parameters, base.best_parameters, rtol=1e-5)
    assert watched.best_step is not None and watched.best_step >= 30
    assert watched.worker_stats is not None and watched.worker_stats.rendered >= 1


def test_without_warm_up_both_runs_sample_from_the_start(tmp_path: Path) -> None:
    pytest.importorskip("blackjax")
    base = run_demo(tmp_path / "base", steps=30, warmup=0, visualize=False)
    watched = run_demo(tmp_path / "watched", steps=30, warmup=0, backend="sync")
    assert base.gradient_evaluations == watched.gradient_evaluations > 0
    np.testing.assert_allclose(watched.best_parameters, base.best_parameters, rtol=1e-5)
    assert watched.worker_stats is not None and watched.worker_stats.rendered >= 1
    # every picture is of a sample (the start is step 0 of the sampling here)
    entries = read_index(tmp_path / "watched" / "fit_history")
    assert entries[-1]["step"] == watched.best_step
    assert entries[-1]["log_likelihood"] == pytest.approx(watched.best_log_likelihood)


@pytest.mark.parametrize("x64", ["0", "1"])
def test_module_entry_point_with_the_process_backend(tmp_path: Path, x64: str) -> None:
    """``python -m``, a real render process, and JAX both ways: importing autofit (e.g. in
    a notebook) switches x64 on, and the sampler then runs in float64."""
    pytest.importorskip("blackjax")
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "autofit_jaxviz", "demo", "--backend", "process",
         "--output", str(out), *SMALL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg", "JAX_ENABLE_X64": x64},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    png = out / IMAGE_NAME
    assert _png_shape(png) == (IMAGE_SIZE[1], IMAGE_SIZE[0], 4)
    assert "process backend" in result.stdout and "0 failed" in result.stdout
    assert "rendering in a thread instead" not in result.stderr  # it really used the process
