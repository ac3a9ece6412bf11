"""The notebook display: kernel detection, switches, atomic PNGs, the pyplot guard,
and real kernels (nbclient + ipykernel 7 from the venv and ipykernel 6.29).

Kernel tests execute notebooks built here; their renderers are held by events
that a later cell sets (``tests/notebooks/kernel_helpers.py``), and every wait
is a flush, a join or an event with a generous timeout. They record every
iopub message, because nbclient keeps only those whose parent is the cell it
is running: what went to which request is read from the raw messages.
"""

from __future__ import annotations

import ast
import base64
import copy
import gc
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib._pylab_helpers import Gcf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import autofit_jaxviz.notebook as display_module  # noqa: E402
from autofit_jaxviz.notebook import (  # noqa: E402
    ENV_NOTEBOOK_DISPLAY,
    ENV_PYAUTO_DISABLE,
    NotebookDisplay,
    in_kernel,
    switched_off_reason,
)
from autofit_jaxviz.payload import BestFit  # noqa: E402
from autofit_jaxviz.render.png import PNG_SIGNATURE, write_png_atomically  # noqa: E402
from autofit_jaxviz.render.pyplot import PyplotGuarded, pyplot_guard  # noqa: E402
from autofit_jaxviz.render.worker import QuickUpdateWorker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "tests" / "notebooks"
JOIN = 60.0  # generous bound for joins and waits; reaching it means a bug


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_nb_{name}", NOTEBOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ENV_NOTEBOOK_DISPLAY, raising=False)
    monkeypatch.delenv(ENV_PYAUTO_DISABLE, raising=False)
    yield
    plt.close("all")


def _png(color: str = "C0") -> bytes:
    fig = Figure(figsize=(1, 1), dpi=20)
    fig.add_subplot().plot([0, 1], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ----------------------------------------------------------- kernel detection


def test_in_kernel_is_false_under_pytest():
    assert in_kernel() is False


def test_in_kernel_in_plain_python_imports_nothing():
    code = (
        "import sys\n"
        "from autofit_jaxviz.notebook import in_kernel\n"
        "print(in_kernel(), 'ipykernel' in sys.modules, 'IPython' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=JOIN
    )
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize("preimport", [False, True], ids=["bare", "ipykernel-imported"])
def test_in_kernel_is_false_in_terminal_ipython(tmp_path, preimport):
    pre = "import ipykernel.zmqshell; " if preimport else ""
    code = (
        f"{pre}import sys; from autofit_jaxviz.notebook import in_kernel; "
        "print('RESULT', get_ipython().__class__.__name__, in_kernel(), 'ipykernel' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--HistoryManager.enabled=False",
         "--colors=nocolor", "-c", code],
        capture_output=True, text=True, check=True, timeout=JOIN,
        env={**os.environ, "IPYTHONDIR": str(tmp_path)},
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    assert line.split()[1:] == ["TerminalInteractiveShell", "False", str(preimport)]


# ------------------------------------------------------------------ switches


@pytest.mark.parametrize(
    ("enabled", "env", "off"),
    [
        (None, {}, False),
        (True, {}, False),
        (False, {}, True),
        (None, {ENV_NOTEBOOK_DISPLAY: "0"}, True),
        (None, {ENV_NOTEBOOK_DISPLAY: "off"}, True),
        (True, {ENV_NOTEBOOK_DISPLAY: "false"}, True),  # the operator's switch wins
        (None, {ENV_NOTEBOOK_DISPLAY: "1"}, False),
        (None, {ENV_PYAUTO_DISABLE: "1"}, True),
        (True, {ENV_PYAUTO_DISABLE: "1"}, True),
        (None, {ENV_PYAUTO_DISABLE: "0"}, False),
        (None, {ENV_NOTEBOOK_DISPLAY: "1", ENV_PYAUTO_DISABLE: "1"}, True),
    ],
)
def test_switched_off_reason(enabled, env, off):
    reason = switched_off_reason(enabled, env)
    assert (reason is not None) is off
    if off and env:
        assert any(name in reason for name in env) or enabled is False


def test_unrecognised_env_value_is_an_error_naming_it():
    from autofit_jaxviz.config import ConfigError

    with pytest.raises(ConfigError, match=f"{ENV_NOTEBOOK_DISPLAY}.*'maybe'"):
        switched_off_reason(None, {ENV_NOTEBOOK_DISPLAY: "maybe"})


def test_switches_read_the_real_environment(monkeypatch):
    monkeypatch.setenv(ENV_PYAUTO_DISABLE, "1")
    assert ENV_PYAUTO_DISABLE in switched_off_reason()


# --------------------------------------------------------------- PNG writing


def test_write_png_atomically_from_bytes_and_figure(tmp_path):
    data = _png()
    path = write_png_atomically(data, tmp_path / "sub" / "a.png")
    assert path.read_bytes() == data
    fig = Figure(figsize=(1, 1), dpi=20)
    fig.add_subplot().plot([1, 0])
    write_png_atomically(fig, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert path.read_bytes() != data
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]


def test_write_png_atomically_keeps_the_old_file_when_saving_fails(tmp_path):
    path = write_png_atomically(_png(), tmp_path / "a.png")
    before = path.read_bytes()

    class Broken:
        def savefig(self, f, **kwargs):
            f.write(b"\x89PNG half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_png_atomically(Broken(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# -------------------------------------------------------------- pyplot guard


def test_pyplot_guard_hides_and_closes_its_figures_on_the_calling_thread():
    user = plt.figure()
    user_nums = plt.get_fignums()
    with pyplot_guard():
        assert plt.get_fignums() == []
        assert plt.gcf() is not user
        plt.plot([0, 1])
        plt.figure()
        assert len(plt.get_fignums()) == 2
        inner = plt.gcf()
    assert plt.get_fignums() == user_nums
    assert plt.gcf() is user
    assert inner.canvas.manager is None or inner.canvas.manager not in Gcf.figs.values()


def test_pyplot_guard_nests():
    with pyplot_guard():
        outer = plt.figure()
        with pyplot_guard():
            assert plt.get_fignums() == []
            plt.figure()
        assert plt.get_fignums() == [outer.number]
        assert plt.gcf() is outer
    assert plt.get_fignums() == []


def test_worker_thread_figures_are_invisible_to_the_main_thread_and_freed():
    """What the inline backend's post-execute hook sees: Gcf on the main thread."""
    opened, release, done = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}
    refs: list[weakref.ref] = []

    def visualizer() -> None:
        with pyplot_guard():
            fig = plt.figure()
            refs.append(weakref.ref(fig))
            plt.plot([0, 1, 0])
            opened.set()
            assert release.wait(JOIN)
            seen["still_current"] = plt.gcf() is fig
            seen["nums"] = plt.get_fignums()
        done.set()

    main_fig = plt.figure()
    thread = threading.Thread(target=visualizer)
    thread.start()
    try:
        assert opened.wait(JOIN)
        assert Gcf.get_all_fig_managers() == [main_fig.canvas.manager]
        plt.plot([1, 2])  # the user's plot goes to the user's figure
        assert plt.gcf() is main_fig
        plt.close("all")  # what the inline backend does after showing
    finally:
        release.set()
        thread.join(JOIN)
    assert done.is_set()
    assert seen == {"still_current": True, "nums": [1]}
    gc.collect()
    assert refs[0]() is None


def test_pyplot_guarded_wrapper_and_pickling():
    calls = []

    def render(payload):
        calls.append(payload)
        plt.figure()
        return "done"

    guarded = PyplotGuarded(render)
    assert guarded(3) == "done" and calls == [3]
    assert plt.get_fignums() == []
    with pytest.raises(TypeError):
        PyplotGuarded(42)
    again = pickle.loads(pickle.dumps(PyplotGuarded(_module_render)))
    assert isinstance(again, PyplotGuarded) and again.render is _module_render


def _module_render(payload: Any) -> Any:
    return payload


# ------------------------------------------------- the display outside a kernel


def test_display_outside_a_kernel_is_inactive_and_files_are_still_written(tmp_path):
    live = NotebookDisplay(image_path=tmp_path / "fit.png")
    assert not live.enabled
    assert live.reason == "not running in a Jupyter kernel"
    assert live.display_id is None

    def render(best: BestFit) -> Path:
        fig = Figure(figsize=(1, 1), dpi=20)
        fig.add_subplot().plot(best.parameters)
        return write_png_atomically(fig, tmp_path / f"step_{best.step}.png")

    with QuickUpdateWorker(live.wrap_render(render), on_rendered=live.on_rendered) as worker:
        for step in (1, 2):
            worker.submit(BestFit(-1.0, [0.0, float(step)], step))
            assert worker.flush(JOIN)
    assert worker.stats.rendered == 2 and worker.stats.failed == 0
    assert live.updates == 0
    assert live.update(_png()) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1.png", "step_2.png"]
    assert "off" in repr(live)


def test_wrap_render_pickles_for_the_process_backend(tmp_path):
    live = NotebookDisplay()
    assert pickle.loads(pickle.dumps(live.wrap_render(_module_render))).render is _module_render
    assert pickle.loads(pickle.dumps(live.wrap_render(_module_render, guard_pyplot=False))) is (
        _module_render
    )
    with pytest.raises(TypeError):
        live.wrap_render(None)


# ------------------------------------------- the display with a stand-in kernel


class _FakeHandle:
    display_id = "fake-id"

    def __init__(self, shell: _FakeShell) -> None:
        self.shell = shell
        self.images: list[bytes] = []

    def update(self, obj) -> None:
        self.images.append(obj.data)
        self.shell.update_parents.append(self.shell.thread_parent())


class _FakeKernel:
    def __init__(self) -> None:
        self.latest = {"msg_id": "latest"}

    def get_parent(self, channel=None):
        return self.latest


class _FakeShell:
    """The parts of ipykernel 7's shell the display uses."""

    def __init__(self) -> None:
        self.kernel = _FakeKernel()
        self._local = threading.local()
        self.update_parents: list[Any] = []
        self.displayed: list[Any] = []

    def get_parent(self):
        return {"msg_id": "fit-cell"}

    def thread_parent(self):
        return getattr(self._local, "parent", None)

    def set_thread_parent(self, parent):
        tokens = (self.thread_parent(),)  # like ipykernel 7: never None
        self._local.parent = parent
        return tokens

    def reset_thread_parent(self, tokens):
        (self._local.parent,) = tokens


@pytest.fixture
def fake_kernel(monkeypatch):
    import IPython.display

    shell = _FakeShell()

    def display(obj, display_id=None):
        shell.displayed.append((obj, display_id, threading.current_thread().name))
        return _FakeHandle(shell)

    monkeypatch.setattr(display_module, "_kernel_shell", lambda: shell)
    monkeypatch.setattr(IPython.display, "display", display)
    return shell


def test_display_created_in_the_cell_displays_once_and_updates_in_place(fake_kernel, tmp_path):
    live = NotebookDisplay()
    assert live.enabled and live.display_id == "fake-id" and live.reason is None
    assert len(fake_kernel.displayed) == 1
    pngs = [_png("C0"), _png("C1")]
    path = write_png_atomically(pngs[0], tmp_path / "fit.png")
    live.on_rendered(None, path)
    live.on_rendered(None, pngs[1])
    live.on_rendered(None, None)  # no path, no image_path: nothing to show
    assert live._handle.images == pngs
    assert live.updates == 2
    assert len(fake_kernel.displayed) == 1  # never a second display


def test_update_rejects_data_that_is_not_a_png(fake_kernel, tmp_path, caplog):
    live = NotebookDisplay()
    bad = tmp_path / "fit.png"
    bad.write_bytes(b"not a png")
    assert live.update(bad) is False
    assert "not a PNG" in caplog.text
    with pytest.raises(OSError):
        live.update(tmp_path / "missing.png")
    assert live.updates == 0


def test_display_created_off_the_main_thread_displays_nothing(fake_kernel):
    made: list[NotebookDisplay] = []
    thread = threading.Thread(target=lambda: made.append(NotebookDisplay()))
    thread.start()
    thread.join(JOIN)
    assert fake_kernel.displayed == []
    assert not made[0].enabled and "main thread" in made[0].reason
    assert made[0].update(_png()) is False


@pytest.mark.parametrize("how", ["argument", ENV_NOTEBOOK_DISPLAY, ENV_PYAUTO_DISABLE])
def test_switches_keep_a_kernel_display_off(fake_kernel, monkeypatch, how):
    if how == "argument":
        live = NotebookDisplay(enabled=False)
    else:
        monkeypatch.setenv(how, "0" if how == ENV_NOTEBOOK_DISPLAY else "1")
        live = NotebookDisplay(enabled=True)
    assert fake_kernel.displayed == [] and not live.enabled
    assert live.update(_png()) is False


def test_render_text_is_pinned_to_the_fit_cell_and_updates_use_the_latest_request(
    fake_kernel, tmp_path
):
    """ipykernel 7: the renderer thread's text follows the fit's cell, while each
    update carries the latest request (the one a frontend still listens to)."""
    live = NotebookDisplay()
    parents_in_render: list[Any] = []

    def render(best: BestFit) -> Path:
        parents_in_render.append(fake_kernel.thread_parent())
        return write_png_atomically(_png(), tmp_path / "fit.png")

    with QuickUpdateWorker(live.wrap_render(render), on_rendered=live.on_rendered) as worker:
        worker.submit(BestFit(0.0, [1.0], 1))
        assert worker.flush(JOIN)
        fake_kernel.kernel.latest = {"msg_id": "later-cell"}
        worker.submit(BestFit(1.0, [2.0], 2))
        assert worker.flush(JOIN)
    assert parents_in_render == [{"msg_id": "fit-cell"}] * 2
    assert fake_kernel.update_parents == [{"msg_id": "latest"}, {"msg_id": "later-cell"}]
    with live.fit_cell_output():
        assert fake_kernel.thread_parent() is None  # the main thread is the kernel's own
    box: list[Any] = []
    thread = threading.Thread(target=lambda: _in_fit_cell(live, fake_kernel, box))
    thread.start()
    thread.join(JOIN)
    assert box == [{"msg_id": "fit-cell"}, None]


def _in_fit_cell(live: NotebookDisplay, shell: _FakeShell, box: list[Any]) -> None:
    with live.fit_cell_output():
        box.append(shell.thread_parent())
    box.append(shell.thread_parent())


def test_concurrent_updates_are_all_counted(fake_kernel):
    live = NotebookDisplay()
    data = _png()
    start = threading.Barrier(4)

    def hammer() -> None:
        start.wait(JOIN)
        for _ in range(25):
            live.update(data)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert live.updates == 100 and len(live._handle.images) == 100


# ------------------------------------------------------------- real kernels


@dataclass(frozen=True)
class KernelFlavour:
    label: str
    version: str
    pythonpath: tuple[str, ...]


@pytest.fixture(scope="session")
def ipykernel629_dir() -> Path:
    try:
        return _load("ipykernel629").ensure()
    except subprocess.CalledProcessError as error:  # pragma: no cover - needs PyPI
        pytest.fail(f"could not pip-install ipykernel 6.29 from PyPI: {error}")


@pytest.fixture(params=["venv", "6.29"], ids=lambda p: f"ipykernel-{p}")
def flavour(request) -> KernelFlavour:
    if request.param == "6.29":
        path = request.getfixturevalue("ipykernel629_dir")
        return KernelFlavour("6.29", _load("ipykernel629").VERSION, (str(path),))
    from importlib.metadata import version

    return KernelFlavour("venv", version("ipykernel"), ())


@dataclass
class Run:
    cells: dict[str, Any]  # tag -> executed nbformat cell
    msg_ids: dict[str, str]  # tag -> execute_request msg_id
    iopub: list[dict[str, Any]]

    def result(self, tag: str) -> Any:
        """The JSON a cell returned as its last expression."""
        (out,) = [o for o in self.cells[tag].outputs if o.output_type == "execute_result"]
        return json.loads(ast.literal_eval(out.data["text/plain"]))

    def messages(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.iopub if m["header"]["msg_type"] == msg_type]

    def tag_of(self, msg: dict[str, Any]) -> str | None:
        parent = msg["parent_header"].get("msg_id")
        return next((tag for tag, mid in self.msg_ids.items() if mid == parent), None)


def run_notebook(
    tmp_path: Path, flavour: KernelFlavour, cells: list[tuple[str, str]], env: dict[str, str]
) -> Run:
    """Execute ``cells`` (tag, code) in a fresh kernel of ``flavour``; keep all iopub."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    spec_dir = tmp_path / "kernels" / "afjv"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"autofit_jaxviz test ({flavour.label})",
        "language": "python",
    }))
    kernel_env = {k: v for k, v in os.environ.items()
                  if k not in {"MPLBACKEND", "PYTEST_CURRENT_TEST", "PYTHONPATH",
                               ENV_NOTEBOOK_DISPLAY, ENV_PYAUTO_DISABLE}}
    # a notebook kernel gets the inline backend, whatever the test runner uses
    kernel_env["PYTHONPATH"] = os.pathsep.join(
        [*flavour.pythonpath, str(NOTEBOOKS), str(ROOT), os.environ.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    kernel_env.update(env)

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"# cell: {tag}\n" + textwrap.dedent(code).strip())
        for tag, code in cells
    ])
    iopub: list[dict[str, Any]] = []

    class Recording(NotebookClient):
        def create_kernel_manager(self):
            # our kernelspec (this interpreter), and owned by the client so it is shut down
            self.km = AsyncKernelManager(
                kernel_name="afjv",
                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]),
            )
            return self.km

        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            channel = kc.iopub_channel
            get_msg = channel.get_msg

            async def recording_get_msg(*args, **kwargs):
                msg = await get_msg(*args, **kwargs)
                iopub.append(copy.deepcopy(msg))  # nbclient rewrites update headers in place
                return msg

            channel.get_msg = recording_get_msg
            return kc

    client = Recording(nb, timeout=120, startup_timeout=120, shutdown_kernel="immediate",
                       resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env)
    msg_ids = {}
    for msg in iopub:
        if msg["header"]["msg_type"] == "execute_input":
            tag = msg["content"]["code"].splitlines()[0].removeprefix("# cell: ")
            msg_ids[tag] = msg["parent_header"]["msg_id"]
    tags = [tag for tag, _ in cells]
    assert sorted(msg_ids) == sorted(tags)
    return Run(dict(zip(tags, nb.cells, strict=True)), msg_ids, iopub)


def _display_id(msg: dict[str, Any]) -> str | None:
    return msg["content"].get("transient", {}).get("display_id")


def _images(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if "image/png" in o.get("data", {})]


FIT_SETUP = """
import json, threading
import ipykernel
from autofit_jaxviz.notebook import NotebookDisplay, in_kernel
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.worker import QuickUpdateWorker
from kernel_helpers import GatedRender, fit_logger
fit_logger()
"""


@pytest.mark.slow
def test_kernel_fit_cell_keeps_one_image_updated_in_place(tmp_path, flavour):
    out = tmp_path / "out"
    out.mkdir()
    run = run_notebook(tmp_path, flavour, [
        ("fit", FIT_SETUP + f"""
render = GatedRender({str(out)!r}, hold_from=2)
live = NotebookDisplay()
worker = QuickUpdateWorker(live.wrap_render(render), on_rendered=live.on_rendered, name="nb-fit")
worker.submit(BestFit(-10.0, [1.0, 3.0, 2.0], 1))
assert worker.flush(60)
worker.submit(BestFit(-5.0, [2.0, 1.0, 3.0], 2))
assert render.started.wait(60)  # step 2 is being drawn while the cell ends
"""),
        ("later", """
total = sum(range(100))
render.gate.set()
assert worker.flush(60)
worker.submit(BestFit(-1.0, [3.0, 2.0, 1.0], 3))
assert worker.flush(60)
"""),
        ("check", """
made = []
t = threading.Thread(target=lambda: made.append(NotebookDisplay()))
t.start(); t.join()
assert worker.shutdown(60)
json.dumps({"in_kernel": in_kernel(), "ipykernel": ipykernel.__version__,
            "updates": live.updates, "display_id": live.display_id, "steps": render.steps,
            "failed": worker.stats.failed, "thread_display": [made[0].enabled, made[0].reason]})
"""),
    ], env={})
    info = run.result("check")
    assert info["ipykernel"] == flavour.version
    assert info["in_kernel"] is True
    assert info["steps"] == [1, 2, 3] and info["failed"] == 0 and info["updates"] == 3
    enabled, reason = info["thread_display"]
    assert enabled is False and "main thread" in reason

    # the fit's cell: exactly one output, an image, showing the last PNG written
    (output,) = run.cells["fit"].outputs
    assert output.output_type == "display_data" and "image/png" in output.data
    shown = base64.b64decode(output.data["image/png"])
    assert shown == (out / "fit.png").read_bytes() == (out / "step_3.png").read_bytes()
    assert shown != (out / "step_1.png").read_bytes()
    # the later cell: nothing at all
    assert run.cells["later"].outputs == []

    # one display, created in the fit's cell; every later change an in-place update
    displays = run.messages("display_data")
    assert [(run.tag_of(m), _display_id(m)) for m in displays] == [("fit", info["display_id"])]
    updates = run.messages("update_display_data")
    assert [(run.tag_of(m), _display_id(m)) for m in updates] == [
        ("fit", info["display_id"]), ("later", info["display_id"]), ("later", info["display_id"])
    ]
    assert run.messages("clear_output") == []
    # the renderer's log lines went to the fit's cell, none to the later cell
    streams = run.messages("stream")
    marker = [m for m in streams if "render-log-marker" in m["content"]["text"]]
    assert marker and {run.tag_of(m) for m in marker} == {"fit"}
    text = "".join(m["content"]["text"] for m in marker)
    assert "step 2" in text and "step 3" in text
    assert [m for m in streams if run.tag_of(m) == "later"] == []


PYPLOT_CELLS = """
%matplotlib inline
import gc, json
import matplotlib.pyplot as plt
from autofit_jaxviz.notebook import NotebookDisplay
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.worker import QuickUpdateWorker
from kernel_helpers import PyplotVisualizer
vis = PyplotVisualizer({out!r}, hold_from=1)
live = NotebookDisplay()
render = live.wrap_render(vis) if {guard} else vis
worker = QuickUpdateWorker(render, on_rendered=live.on_rendered, name="nb-pyplot")
worker.submit(BestFit(-3.0, [1.0, 2.0, 1.5], 1))
assert vis.opened.wait(60)  # the visualizer's figure is open while this cell ends
"""


def _pyplot_notebook(tmp_path: Path, flavour: KernelFlavour, guard: bool) -> tuple[Run, Path]:
    out = tmp_path / "out"
    out.mkdir()
    run = run_notebook(tmp_path, flavour, [
        ("setup", PYPLOT_CELLS.format(out=str(out), guard=guard)),
        ("user", "plt.plot([0, 1, 2], [2, 0, 1]);"),
        ("release", """
vis.gate.set()
assert worker.flush(60)
worker.submit(BestFit(-2.0, [2.0, 1.0, 2.5], 2))
assert worker.flush(60)
gc.collect()
alive_before_cell_end = sum(ref() is not None for ref in vis.figures)
"""),
        ("check", """
assert worker.shutdown(60)
gc.collect()
json.dumps({"fignums": plt.get_fignums(), "survived": vis.survived, "updates": live.updates,
            "alive_before_cell_end": alive_before_cell_end, "failed": worker.stats.failed,
            "alive": sum(ref() is not None for ref in vis.figures)})
"""),
    ], env={})
    return run, out


@pytest.mark.slow
def test_kernel_pyplot_visualizer_never_leaks_into_cells(tmp_path, flavour):
    run, out = _pyplot_notebook(tmp_path, flavour, guard=True)
    info = run.result("check")
    assert info["failed"] == 0 and info["updates"] == 2
    assert info["survived"] == {"1": True, "2": True}  # never closed underneath
    assert info["fignums"] == []
    assert info["alive_before_cell_end"] == 0 and info["alive"] == 0
    (output,) = run.cells["setup"].outputs  # only the display handle
    assert base64.b64decode(output.data["image/png"]) == (out / "pyplot_2.png").read_bytes()
    # the user's own inline plot still works, once, in its own cell
    (user_plot,) = _images(run.cells["user"])
    assert len(run.cells["user"].outputs) == 1
    assert run.cells["release"].outputs == []
    displays = run.messages("display_data")
    assert [(run.tag_of(m), _display_id(m) is not None) for m in displays] == [
        ("setup", True), ("user", False)
    ]
    assert user_plot.data["image/png"] == displays[1]["content"]["data"]["image/png"]


@pytest.mark.slow
def test_kernel_pyplot_leak_is_seen_without_the_guard(tmp_path):
    """Control: the same notebook without the guard shows the bug this prevents,
    so the test above can fail."""
    from importlib.metadata import version

    run, _ = _pyplot_notebook(tmp_path, KernelFlavour("venv", version("ipykernel"), ()), False)
    info = run.result("check")
    assert info["survived"]["1"] is False  # closed under the visualizer
    stolen = [m for m in run.messages("display_data")
              if run.tag_of(m) == "setup" and _display_id(m) is None]
    assert stolen and "image/png" in stolen[0]["content"]["data"]
    assert len(_images(run.cells["setup"])) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("variable", [ENV_NOTEBOOK_DISPLAY, ENV_PYAUTO_DISABLE])
def test_kernel_display_off_by_environment_still_writes_files(tmp_path, flavour, variable):
    out = tmp_path / "out"
    out.mkdir()
    value = "0" if variable == ENV_NOTEBOOK_DISPLAY else "1"
    run = run_notebook(tmp_path, flavour, [
        ("fit", FIT_SETUP + f"""
render = GatedRender({str(out)!r})
live = NotebookDisplay()
worker = QuickUpdateWorker(live.wrap_render(render), on_rendered=live.on_rendered)
for step in (1, 2):
    worker.submit(BestFit(-1.0 * step, [1.0, float(step)], step))
    assert worker.flush(60)
assert worker.shutdown(60)
"""),
        ("check", """
json.dumps({"enabled": live.enabled, "reason": live.reason, "updates": live.updates,
            "in_kernel": in_kernel(), "rendered": worker.stats.rendered})
"""),
    ], env={variable: value})
    info = run.result("check")
    assert info["in_kernel"] is True and info["enabled"] is False
    assert variable in info["reason"]
    assert info["updates"] == 0 and info["rendered"] == 2
    assert run.cells["fit"].outputs == []
    assert run.messages("display_data") == [] and run.messages("update_display_data") == []
    assert sorted(p.name for p in out.iterdir()) == ["fit.png", "step_1.png", "step_2.png"]


@pytest.mark.slow
def test_kernel_process_backend_updates_the_same_output(tmp_path, flavour):
    """The render runs in a render process; the update still happens in the
    kernel, on the worker's thread, in place."""
    out = tmp_path / "out"
    out.mkdir()
    run = run_notebook(tmp_path, flavour, [
        ("fit", FIT_SETUP + f"""
import os
from kernel_helpers import StepRender
live = NotebookDisplay()
worker = QuickUpdateWorker(live.wrap_render(StepRender({str(out)!r})), backend="process",
                           on_rendered=live.on_rendered)
for step in (1, 2):
    worker.submit(BestFit(-1.0 * step, [1.0, float(step)], step))
    assert worker.flush(60)
assert worker.shutdown(60)
"""),
        ("check", """
json.dumps({"updates": live.updates, "rendered": worker.stats.rendered,
            "failed": worker.stats.failed, "starts": worker.stats.process_starts})
"""),
    ], env={})
    info = run.result("check")
    assert info == {"updates": 2, "rendered": 2, "failed": 0, "starts": 1}
    (output,) = run.cells["fit"].outputs
    shown = base64.b64decode(output.data["image/png"])
    assert shown == (out / "step_2.png").read_bytes() != (out / "step_1.png").read_bytes()
    assert len(run.messages("display_data")) == 1 and len(run.messages("update_display_data")) == 2
