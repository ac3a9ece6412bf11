"""The render process draws what a thread would draw, where a thread would put it.

Each test makes the same quick update once with the thread backend and once
with the process backend, through a real autofit fitness (``enable()``,
``search.make_fitness``, ``manage_quick_update``, ``shutdown_quick_update``),
and compares the two pictures: same path, same bytes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import autofit as af
import matplotlib
import numpy as np
import pytest
from autofit_helpers import JaxStateAnalysis, StateAnalysis, gaussian_data, gaussian_model
from autonerves import conf

import autofit_jaxviz.autofit as live
import autofit_jaxviz.autofit.hooks as hooks_module
import autofit_jaxviz.autofit.hub as hub_module
from autofit_jaxviz.render.parent_state import ParentState

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

BACKENDS = ("thread", "process")
VECTOR = np.array([48.0, 20.0, 9.0])


@pytest.fixture(autouse=True)
def clean_configuration(tmp_path, monkeypatch):
    """Every test starts from autonerves' configuration as it was, in a folder of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(conf.instance, "output_path", str(tmp_path / "output"))
    configs = list(conf.instance.configs)
    logging.getLogger("autofit").setLevel(logging.WARNING)
    yield
    live.disable()
    conf.instance.configs = configs


def workspace_config(root: Path, *, dpi: int, residuals: bool) -> Path:
    """A workspace ``config`` folder choosing the test visualizer's dpi and panels."""
    folder = root / "visualize"
    folder.mkdir(parents=True)
    (folder / "jaxviz_test.yaml").write_text(
        f"picture:\n  dpi: {dpi}\n  residuals: {str(residuals).lower()}\n")
    return root


def quick_update(backend: str, analysis, name: str = "fit") -> Path:
    """One quick update through a real autofit fitness; returns the picture's path."""
    live.enable(background=True, backend=backend, shutdown_timeout=120)
    model = gaussian_model()
    search = af.Emcee(name=name, iterations_per_quick_update=1)
    search.paths.model = model
    fitness = search.make_fitness(analysis=analysis, model=model)
    worker = hub_module.hub_for(fitness).worker
    fitness.manage_quick_update(VECTOR, np.array(-1.0))
    fitness.shutdown_quick_update()
    live.disable()
    if backend == "process":  # a fallback to a thread would compare thread with thread
        # drawn in a render process: a new one or one a previous search left idle
        assert worker._process_render.fallback_reason is None and worker._process_render.loads
    return Path(search.paths.image_path) / "fit.png"


def draw_with_both(make_analysis, name: str = "fit") -> dict[str, tuple[Path, bytes]]:
    drawn = {}
    for backend in BACKENDS:
        path = quick_update(backend, make_analysis(), name)
        assert path.exists(), f"{backend}: no picture at {path}"
        drawn[backend] = (path, path.read_bytes())
        path.unlink()
    return drawn


def assert_same_picture(drawn: dict[str, tuple[Path, bytes]]) -> bytes:
    (thread_path, thread_png), (process_path, process_png) = drawn["thread"], drawn["process"]
    assert process_path == thread_path
    assert process_png == thread_png, "the render process drew a different picture"
    return thread_png


def png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def gaussian_analysis(cls=StateAnalysis):
    def make():
        data, noise = gaussian_data()
        return cls(data=data, noise_map=noise)
    return make


def test_a_pushed_output_path_is_where_both_backends_write(tmp_path):
    custom = tmp_path / "custom"
    conf.instance.push(new_path=workspace_config(tmp_path / "config", dpi=50, residuals=False),
                       output_path=str(custom))
    drawn = draw_with_both(gaussian_analysis())
    assert_same_picture(drawn)
    assert drawn["process"][0].is_relative_to(custom)
    assert not (tmp_path / "output").exists(), "a picture went to the default output folder"


def test_a_pushed_workspace_config_decides_what_the_render_process_draws(tmp_path):
    conf.instance.push(new_path=workspace_config(tmp_path / "config", dpi=37, residuals=True),
                       output_path=str(tmp_path / "custom"))
    png = assert_same_picture(draw_with_both(gaussian_analysis()))
    assert png_size(png) == (4 * 37, 3 * 37)  # the workspace's dpi, not the default 50


def test_a_config_value_set_in_memory_reaches_the_render_process(tmp_path):
    conf.instance.push(new_path=workspace_config(tmp_path / "config", dpi=50, residuals=False),
                       output_path=str(tmp_path / "custom"))
    conf.instance["visualize"]["jaxviz_test"]["picture"]["dpi"] = 33  # a notebook's edit
    png = assert_same_picture(draw_with_both(gaussian_analysis()))
    assert png_size(png) == (4 * 33, 3 * 33)


def test_rcparams_set_by_the_script_reach_the_render_process():
    style = {"lines.linewidth": 7.0, "axes.facecolor": "#ffd0d0", "font.size": 5.0}
    with matplotlib.rc_context(style):
        styled = assert_same_picture(draw_with_both(gaussian_analysis()))
    plain = quick_update("thread", gaussian_analysis()())
    assert plain.read_bytes() != styled  # the settings do change the picture


@pytest.mark.parametrize("x64", [True, False], ids=["x64-on", "x64-off"])
def test_jax_precision_of_the_parent_is_used_by_a_jax_visualizer(monkeypatch, x64):
    import jax

    # autofit sets JAX_ENABLE_X64=True in the environment when it is imported;
    # what counts is the value the script chose, whatever the environment says
    monkeypatch.setenv("JAX_ENABLE_X64", str(not x64))
    jax.config.update("jax_enable_x64", x64)
    png = assert_same_picture(draw_with_both(gaussian_analysis(JaxStateAnalysis)))
    jax.config.update("jax_enable_x64", not x64)
    other = quick_update("thread", gaussian_analysis(JaxStateAnalysis)())
    assert other.read_bytes() != png  # the precision is visible in the picture


def test_a_second_search_after_a_new_push_is_drawn_where_that_push_says(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    conf.instance.push(new_path=workspace_config(tmp_path / "config-a", dpi=30, residuals=False),
                       output_path=str(first))
    a = draw_with_both(gaussian_analysis(), name="search-a")
    conf.instance.push(new_path=workspace_config(tmp_path / "config-b", dpi=41, residuals=True),
                       output_path=str(second))
    b = draw_with_both(gaussian_analysis(), name="search-b")
    assert png_size(assert_same_picture(a)) == (4 * 30, 3 * 30)
    assert png_size(assert_same_picture(b)) == (4 * 41, 3 * 41)
    assert a["process"][0].is_relative_to(first) and b["process"][0].is_relative_to(second)


def test_state_is_taken_when_the_render_is_handed_over_not_when_the_child_starts(tmp_path):
    """A push after the worker exists but before its (lazy) child starts must not
    move that search's pictures: the render saw the paths of its own hand-over."""
    from autofit_jaxviz.render.process import ProcessRender

    conf.instance.push(new_path=workspace_config(tmp_path / "config", dpi=30, residuals=False),
                       output_path=str(tmp_path / "handed-over"))
    render = ProcessRender(_report_output_path, name="handover")
    conf.instance.output_path = str(tmp_path / "later")
    try:
        assert render(0) == str(tmp_path / "handed-over")
    finally:
        render.close()


def _report_output_path(_payload):
    return str(conf.instance.output_path)


def test_what_cannot_be_carried_over_is_named_once(caplog):
    from autofit_jaxviz.render.process import ProcessRender

    with matplotlib.rc_context({"path.effects": [_Unpicklable()]}):
        render = ProcessRender(_report_output_path, name="notes")
    try:
        with caplog.at_level(logging.WARNING, logger="autofit_jaxviz"):
            render(0)
            render(0)
    finally:
        render.close()
    lines = [r.getMessage() for r in caplog.records if "not carried over" in r.getMessage()]
    assert len(lines) == 1 and "path.effects" in lines[0], lines


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("this object stays in its process")


def test_capture_reads_no_module_the_parent_did_not_import():
    import subprocess
    import sys

    code = ("import sys; from autofit_jaxviz.render.parent_state import ParentState; "
            "s = ParentState.capture(); "
            "print(s.jax_config is None, s.rcparams is None, s.autonerves is None, "
            "sorted({'jax', 'matplotlib', 'autonerves'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True", "True", "True", "[]"]


def test_a_missing_working_directory_is_named(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    state = ParentState.capture()
    assert state.cwd is None
    assert any("working directory" in note for note in state.not_captured)


def test_jax_options_set_by_a_script_without_autofit_reach_the_render_process(tmp_path):
    """No autofit (which sets JAX_ENABLE_X64 in the environment): only the
    script's ``jax.config.update`` calls say float64 and the CPU platform."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "os.environ.pop('JAX_ENABLE_X64', None)\n"
        "import jax\n"
        "jax.config.update('jax_enable_x64', True)\n"
        "jax.config.update('jax_platforms', 'cpu')\n"
        "from render_helpers import jax_settings\n"
        "from autofit_jaxviz.render.process import ProcessRender\n"
        "if __name__ == '__main__':\n"
        "    render = ProcessRender(jax_settings)\n"
        "    print(jax_settings(0), render(0))\n"
        "    render.close()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    here, there = out.stdout.strip().split(") (")
    assert here + ")" == "('float64', 'cpu', 'cpu')"
    assert "(" + there == "('float64', 'cpu', 'cpu')"


def colourful_share(pixels: np.ndarray) -> float:
    """The share of pixels that are not a shade of grey."""
    rgb = pixels[..., :3]
    return float(np.mean(np.ptp(rgb, axis=-1) > 0.02))


def test_a_real_autogalaxy_quick_update_lands_in_the_users_folder_in_their_colours(tmp_path):
    """autogalaxy's own AnalysisImaging and fit.png: the workspace's output path
    and its ``visualize/general.yaml`` colormap, the same pixels from both backends."""
    pytest.importorskip("autogalaxy")
    import autogalaxy as ag
    from autogalaxy_helpers import sersic_imaging, sersic_model
    from matplotlib.image import imread

    config = tmp_path / "config" / "visualize"
    config.mkdir(parents=True)
    (config / "general.yaml").write_text("colormap: gray\n")
    custom = tmp_path / "custom"
    conf.instance.push(new_path=str(config.parent), output_path=str(custom))
    model = sersic_model()
    vector = model.physical_values_from_prior_medians
    drawn = {}
    for backend in BACKENDS:
        live.enable(background=True, backend=backend, shutdown_timeout=120)
        search = af.Emcee(name="galaxy", iterations_per_quick_update=1)
        search.paths.model = model
        analysis = ag.AnalysisImaging(dataset=sersic_imaging(), use_jax=False)
        fitness = search.make_fitness(analysis=analysis, model=model)
        fitness.manage_quick_update(np.asarray(vector), np.array(-1.0))
        fitness.shutdown_quick_update()
        live.disable()
        path = Path(search.paths.image_path) / "fit.png"
        assert path.exists(), f"{backend}: no fit.png at {path}"
        drawn[backend] = (path, path.read_bytes(), imread(path))
        path.unlink()
    assert drawn["process"][0] == drawn["thread"][0]
    assert drawn["process"][0].is_relative_to(custom)
    assert not (tmp_path / "output").exists()
    assert colourful_share(drawn["process"][2]) < 0.01  # the workspace's grey colormap
    np.testing.assert_array_equal(drawn["process"][2], drawn["thread"][2])


def test_a_whole_emcee_fit_with_the_default_backend_draws_into_the_pushed_output_path(
        tmp_path):
    """The issue's reproduction: a workspace-style push, the default backend, a real fit."""
    from autofit_helpers import MarkedAnalysis, read_markers

    custom = tmp_path / "custom"
    conf.instance.push(new_path=workspace_config(tmp_path / "config", dpi=50, residuals=False),
                       output_path=str(custom))
    live.enable(background=True)
    assert hooks_module._state["settings"].backend == "process"
    data, noise = gaussian_data()
    search = af.Emcee(name="g", nwalkers=20, nsteps=60, iterations_per_quick_update=200,
                      silence=True, seed=1)
    search.fit(model=gaussian_model(), analysis=MarkedAnalysis(data=data, noise_map=noise))
    pictures = sorted(custom.rglob("fit.png"))
    assert len(pictures) == 1, pictures
    rows = read_markers(custom)
    assert rows and all(pid != os.getpid() for _, _, pid in rows)  # drawn in the render process
    assert not (tmp_path / "output").exists()
