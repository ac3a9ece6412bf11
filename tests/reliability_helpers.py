"""Helpers for ``tests/test_reliability.py``: render functions that leave evidence,
a strict PNG check, and the scripts the subprocess tests run.

Everything a render process must unpickle lives at module level here (a
render process imports this module by name). Events are files
(:class:`FileEvent`), so they work between threads and across the process
boundary alike.

Evidence is written *outside* the folder the picture goes to: a folder that is
unwritable, or removed mid-run, must not also destroy the record of what was
drawn.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from file_event import FileEvent

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOLD_SECONDS = 60.0  # a held render gives up after this long: reaching it means a test bug


# --------------------------------------------------------------------------- PNG files


def png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check that ``path`` is one complete, valid PNG and return its text chunks.

    Walks every chunk (length, type, CRC) up to ``IEND``, which must be the last
    bytes of the file, then decodes the pixels. Raises ``AssertionError`` naming
    what is wrong, so a truncated or torn file fails a test with a reason.
    """
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise AssertionError(f"{path}: not a PNG ({len(data)} bytes, starts {data[:8]!r})")
    text: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise AssertionError(f"{path}: truncated at {len(data)} bytes, before the IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise AssertionError(f"{path}: truncated inside a {kind!r} chunk ({len(data)} bytes)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) != crc:
            raise AssertionError(f"{path}: bad CRC in a {kind!r} chunk at byte {pos}")
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
        pos = end
        if kind == b"IEND":
            if pos != len(data):
                raise AssertionError(f"{path}: {len(data) - pos} bytes after the IEND chunk")
            break
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a corrupt IDAT stream raises here
    return text


def png_of(values: Any, title: str) -> bytes:
    """A small real picture of ``values``, titled ``title`` (a tEXt chunk), as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0, 1.5), dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.ravel(np.asarray(values, dtype=float)), "r.-")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Title": title})
    return buffer.getvalue()


# --------------------------------------------------------------------------- the render


class Scribe:
    """A render function for :class:`~autofit_jaxviz.render.worker.QuickUpdateWorker`.

    Draws ``folder/fit.png`` from a :class:`~autofit_jaxviz.payload.BestFit` (its
    PNG title names the tag and step), then appends one JSON line to
    ``evidence``: what was drawn, by which process, on which call. Picklable, so
    it serves both backends.

    ``fail``: ``"raise"`` (ValueError on every call), ``"not-implemented"``, or
    ``"enospc"`` (OSError: no space left on device). ``fail_calls``: the 1-based
    calls (counted in the rendering process) that raise ValueError instead of
    drawing. ``hold_call``: on that call, write the first half of the PNG, set
    ``started`` and wait for ``release``. ``hang_call``: the same, but never
    return. ``atomic``: write beside the target and rename (the old picture stays
    whole until the new one is complete); otherwise write the target in place,
    as most visualizers do. The folder is never created: one that vanished
    stays vanished.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        evidence: str | os.PathLike[str],
        *,
        tag: str = "fit",
        fail: str | None = None,
        fail_calls: tuple[int, ...] = (),
        hold_call: int | None = None,
        hang_call: int | None = None,
        atomic: bool = True,
    ) -> None:
        self.folder = str(folder)
        self.evidence = str(evidence)
        self.tag = tag
        self.fail = fail
        self.fail_calls = tuple(fail_calls)
        self.hold_call = hold_call
        self.hang_call = hang_call
        self.atomic = atomic
        self.creator = os.getpid()
        self.calls = 0
        self.started = FileEvent(near=evidence)
        self.release = FileEvent(near=evidence)

    @property
    def target(self) -> Path:
        return Path(self.folder) / "fit.png"

    def __call__(self, fit: Any) -> str:
        self.calls += 1
        if self.fail == "not-implemented":
            raise NotImplementedError
        if self.fail == "raise" or self.calls in self.fail_calls:
            raise ValueError(f"render call {self.calls} failed (step {fit.step})")
        if self.fail == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.target))
        png = png_of(fit.parameters, f"{self.tag} step {fit.step}")
        target = self.target
        dest = target.with_name(f".{target.name}.{os.getpid()}.tmp") if self.atomic else target
        with open(dest, "wb") as f:  # no mkdir, on purpose
            f.write(png[: len(png) // 2])
            f.flush()
            if self.calls == self.hang_call:
                self._hang()
            if self.calls == self.hold_call:
                self.started.set()
                if not self.release.wait(HOLD_SECONDS):
                    raise RuntimeError("the test never released the held render")
            f.write(png[len(png) // 2 :])
        if self.atomic:
            os.replace(dest, target)
        record = {"tag": self.tag, "step": int(fit.step), "ll": float(fit.log_likelihood),
                  "params": np.ravel(np.asarray(fit.parameters, dtype=float)).tolist(),
                  "pid": os.getpid(), "call": self.calls}
        with open(self.evidence, "a") as f:
            f.write(json.dumps(record) + "\n")
        return str(target)

    def _hang(self) -> None:
        self.started.set()
        if os.getpid() == self.creator:
            self.release.wait()  # a thread: freed by the test's teardown, if ever
        else:
            # a render process, which shutdown terminates: never wait on a shared
            # Condition here, a process killed inside its wait breaks it
            threading.Event().wait()


def read_evidence(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every picture a :class:`Scribe` completed, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f.read().splitlines()]


# --------------------------------------------------------------------------- processes


def child_pids() -> set[int]:
    """The live child processes of this process, read from ``/proc``."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return pids


def resource_tracker_pid() -> int | None:
    """multiprocessing's own helper process (started by the first spawn); not ours."""
    from multiprocessing import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_pid", None)


def gone_within(pid: int, timeout: float) -> bool:
    """Wait for any process (not only our child) to end; pidfd, so no polling."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- a sampler


def chain(steps: int, seed: int, *, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A chain closing in on its optimum, on a 1/64 grid so that NumPy and XLA
    compute bit-identical float32 log-likelihoods."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(1.0, 0.05, steps)[:, None]
    params = (0.5 + np.round(rng.normal(size=(steps, n)) * scale * 64) / 64).astype(np.float32)
    lls = -np.sum((params - np.float32(0.5)) ** 2, axis=-1, dtype=np.float32)
    return params, lls


def final_best(lls: np.ndarray) -> tuple[int, float]:
    """(step, log-likelihood) of the first best finite entry: what a sampler ends on."""
    finite = np.where(np.isfinite(lls), lls, -np.inf)
    step = int(np.argmax(finite))
    return step, float(finite[step])


class Sampler:
    """A deterministic stand-in for a sampler, reporting through one of two paths.

    ``"host"``: a Python loop that keeps its best and hands every improvement to
    ``target.submit`` (what a user's own loop does). ``"jit"``: a jitted
    ``lax.scan`` carrying a :class:`~autofit_jaxviz.device.tracker.BestFitTracker`
    whose host callback feeds ``target`` (what a fully jitted sampler does).
    ``run`` may be called repeatedly; the state carries over. ``interrupt_at``
    raises KeyboardInterrupt when the loop reaches that step (host: inside the
    loop, like a likelihood; jit: after the jitted chunk containing it, where
    Python first sees a Ctrl-C).
    """

    def __init__(self, path: str, target: Any) -> None:
        self.path = path
        self.target = target
        self.step = 0
        self.best: tuple[int, float] = (-1, -np.inf)
        if path == "jit":
            import jax
            import jax.numpy as jnp
            from jax import lax

            from autofit_jaxviz import BestFitTracker

            self.tracker = BestFitTracker(target)
            tracker = self.tracker

            @jax.jit
            def scan(state, params, lls):
                def body(s, x):
                    return tracker.update(s, *x), None

                return lax.scan(body, state, (params, lls))[0]

            self._scan = scan
            self.state = tracker.init(jnp.zeros(3, jnp.float32))
        elif path != "host":
            raise ValueError(f"unknown path {path!r}")

    def run(self, params: np.ndarray, lls: np.ndarray, *, interrupt_at: int | None = None) -> None:
        if self.path == "host":
            from autofit_jaxviz.payload import BestFit

            for p, ll in zip(params, lls, strict=True):
                if self.step == interrupt_at:
                    raise KeyboardInterrupt
                ll = float(ll)
                if np.isfinite(ll) and ll > self.best[1]:
                    self.best = (self.step, ll)
                    self.target.submit(BestFit(ll, np.array(p), self.step))
                self.step += 1
            return
        import jax

        stop = len(lls) if interrupt_at is None else interrupt_at - self.step
        self.state = self._scan(self.state, params[:stop], lls[:stop])
        jax.effects_barrier()
        self.step += stop
        self.best = (int(self.state.best_step), float(self.state.best_log_likelihood))
        if interrupt_at is not None:
            raise KeyboardInterrupt

    def finish(self) -> tuple[int, float]:
        """End of the run: the tracker pushes its final best. Returns (step, ll)."""
        if self.path == "jit":
            self.state = self.tracker.report_final(self.state)
        return self.best


# --------------------------------------------------------------------------- autofit

#: Built on first access (PEP 562), so a render process that only needs a
#: Scribe never imports autofit, and importing this module never sets autofit's
#: JAX_ENABLE_X64 before a test imports JAX. Pickle finds them by name.
_AUTOFIT_CLASSES = ("StrictGaussian", "CheckedVisualizer", "TaggedAnalysis")


def __getattr__(name: str) -> Any:
    if name in _AUTOFIT_CLASSES:
        globals().update(_build_autofit_classes())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_autofit_classes() -> dict[str, type]:
    import autofit as af
    from autofit.example.visualize import VisualizerExample
    from autofit_helpers import MarkedAnalysis

    class StrictGaussian(af.ex.Gaussian):
        """The example Gaussian, refusing a non-positive width the way PyAutoGalaxy's
        profiles refuse out-of-domain parameters: by raising in the constructor."""

        def __init__(self, centre: float = 0.0, normalization: float = 0.1,
                     sigma: float = 0.01):
            if not sigma > 0:
                raise ValueError(f"StrictGaussian: sigma must be > 0, got {sigma}")
            super().__init__(centre=centre, normalization=normalization, sigma=sigma)

    class CheckedVisualizer(VisualizerExample):
        """autofit's example visualizer (pyplot, main thread), unchanged, plus a
        record of each full update and a check that it wrote a whole PNG."""

        @staticmethod
        def visualize(analysis, paths, instance, during_analysis):
            import matplotlib.pyplot as plt

            VisualizerExample.visualize(analysis, paths, instance, during_analysis)
            png_text(Path(paths.image_path) / "model_fit.png")
            analysis.full_updates.append((analysis.evaluations, during_analysis,
                                          sorted(plt.get_fignums())))

    class TaggedAnalysis(MarkedAnalysis):
        """autofit's example Gaussian whose quick update draws ``fit.png`` and
        appends a JSON line to ``markers.jsonl`` beside it: the tag of its fit,
        the parameters drawn, the evaluations so far and the drawing process.

        ``draw``: ``"figure"`` (a private Agg figure, written atomically) or
        ``"pyplot"`` (pyplot's global state and ``plt.savefig`` in place, as
        autofit's own visualizers do; the quick update checks that its figure
        holds only its own lines). ``fail_calls``: quick-update calls (1-based,
        counted in the drawing process) that raise ``OSError(ENOSPC)``.
        ``interrupt_after``: the likelihood raises KeyboardInterrupt once this
        many evaluations are done (Ctrl-C arriving while it runs).
        """

        Visualizer = CheckedVisualizer

        def __init__(self, *args, tag: str = "fit", draw: str = "figure",
                     fail_calls: tuple[int, ...] = (), interrupt_after: int | None = None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.tag = tag
            self.draw = draw
            self.fail_calls = tuple(fail_calls)
            self.interrupt_after = interrupt_after
            self.quick_calls = 0
            self.full_updates: list[tuple[int, bool, list[int]]] = []

        def log_likelihood_function(self, instance, *args, **kwargs):
            if self.interrupt_after is not None and self.evaluations >= self.interrupt_after:
                raise KeyboardInterrupt
            return super().log_likelihood_function(instance, *args, **kwargs)

        def perform_quick_update(self, paths, instance):
            from autofit_jaxviz.render.png import write_png_atomically

            self.quick_calls += 1
            image = Path(paths.image_path)
            if self.quick_calls in self.fail_calls:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(image / "fit.png"))
            params = [float(instance.centre), float(instance.normalization),
                      float(instance.sigma)]
            model_data = np.asarray(instance.model_data_from(xvalues=np.arange(len(self.data))))
            title = f"{self.tag} {params}"
            if self.draw == "pyplot":
                import matplotlib.pyplot as plt

                fig = plt.figure(figsize=(3, 2), dpi=50)
                plt.plot(self.data, "k.")
                plt.plot(model_data, "r-")
                if plt.gcf() is not fig or len(plt.gca().lines) != 2:
                    raise AssertionError("pyplot cross-talk: the quick update's figure "
                                         "is not its own")
                plt.savefig(image / "fit.png", metadata={"Title": title})
                plt.close(fig)
            else:
                from matplotlib.backends.backend_agg import FigureCanvasAgg
                from matplotlib.figure import Figure

                fig = Figure(figsize=(3, 2), dpi=50)
                FigureCanvasAgg(fig)
                ax = fig.add_subplot()
                ax.plot(self.data, "k.")
                ax.plot(model_data, "r-")
                write_png_atomically(fig, image / "fit.png", metadata={"Title": title})
            record = {"tag": self.tag, "params": params, "evaluations": self.evaluations,
                      "pid": os.getpid()}
            with open(image / "markers.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    classes = {"StrictGaussian": StrictGaussian, "CheckedVisualizer": CheckedVisualizer,
               "TaggedAnalysis": TaggedAnalysis}
    for name, cls in classes.items():
        cls.__module__ = __name__
        cls.__qualname__ = name
    return classes


def read_markers(root: str | os.PathLike[str]) -> dict[Path, list[dict[str, Any]]]:
    """Every ``markers.jsonl`` under ``root``: its folder -> the quick updates drawn there."""
    found = {}
    for path in sorted(Path(root).rglob("markers.jsonl")):
        found[path.parent] = [json.loads(line) for line in path.read_text().splitlines()]
    return found


# --------------------------------------------------------------------------- subprocesses


def _emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def exit_scenario(*, backend: str, path: str, folder: str, evidence: str, shutdown: str,
                  hang: bool) -> None:
    """A fit script that ends while a render is in progress and the final best
    fit is pending.

    Not ``hang``: the first render is held half-written *in place* (so a render
    cut short at exit would leave a torn fit.png) and is released when the
    interpreter exits (``shutdown="implicit"``: an atexit hook that runs before
    the worker's), or after an explicit ``shutdown`` was started on another
    thread. ``hang``: the first picture is finished, then the second render
    never returns (written atomically, so the first picture must survive) and
    the worker's shutdown timeout is one second.
    """
    import atexit

    from autofit_jaxviz.render.worker import QuickUpdateWorker

    _logging()
    params, lls = chain(120, seed=3)
    if hang:
        scribe = Scribe(folder, evidence, hang_call=2)
        worker = QuickUpdateWorker(scribe, backend=backend, name="exit-test", shutdown_timeout=1.0)
    else:
        scribe = Scribe(folder, evidence, hold_call=1, atomic=False)
        worker = QuickUpdateWorker(scribe, backend=backend, name="exit-test")
    sampler = Sampler(path, worker)
    sampler.run(params[:1], lls[:1])  # one improvement: the first render
    if hang:
        worker.flush(HOLD_SECONDS)  # the first picture is complete
    sampler.run(params[1:], lls[1:])
    final = sampler.finish()
    if not scribe.started.wait(HOLD_SECONDS):
        raise SystemExit("no render was in progress")
    result: dict[str, Any] = {"final": list(final), "pids": []}
    if backend == "process":
        result["pids"] = [worker._process_render.pid]
    if shutdown == "explicit":
        outcome: list[bool] = []
        timeout = 1.0 if hang else HOLD_SECONDS
        closer = threading.Thread(target=lambda: outcome.append(worker.shutdown(timeout)))
        closer.start()
        if not hang:
            scribe.release.set()
        closer.join()
        result["shutdown"] = outcome
    elif not hang:
        atexit.register(scribe.release.set)  # LIFO: runs before the worker's hook
    _emit(result)


def _terminal_sigint() -> None:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal. A scenario started from a
    shell without job control (a background job, some CI runners) inherits SIGINT
    as ignored, and Python then installs no handler of its own."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def ctrl_c_scenario(*, backend: str, folder: str, evidence: str) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group, while
    the final best fit is being drawn; the cleanup then shuts the worker down.
    Run it as the leader of its own process group."""
    import signal

    from autofit_jaxviz.payload import BestFit
    from autofit_jaxviz.render.worker import QuickUpdateWorker

    _terminal_sigint()
    _logging()
    scribe = Scribe(folder, evidence, hold_call=2)
    worker = QuickUpdateWorker(scribe, backend=backend, name="ctrl-c")
    result: dict[str, Any] = {"pids": []}
    try:
        worker.submit(BestFit(1.0, np.ones(3), 1))
        worker.flush(HOLD_SECONDS)
        if backend == "process":
            result["pids"] = [worker._process_render.pid]
        worker.submit(BestFit(2.0, np.full(3, 2.0), 2))  # the final best...
        scribe.started.wait(HOLD_SECONDS)  # ...half drawn when the user presses Ctrl-C
        os.killpg(0, signal.SIGINT)
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:  # the sampler computing: Ctrl-C lands in here
            sum(range(1000))
        raise SystemExit("SIGINT never arrived")
    except KeyboardInterrupt:
        # The slow render may now finish. From a daemon thread: a render process that
        # was interrupted inside one of the event's lock operations may hold its lock.
        releaser = threading.Thread(target=scribe.release.set, daemon=True)
        releaser.start()
        releaser.join(HOLD_SECONDS)
        result["shutdown"] = worker.shutdown(HOLD_SECONDS)
        stats = worker.stats
        result["stats"] = {"rendered": stats.rendered, "failed": stats.failed,
                           "starts": stats.process_starts,
                           "restarts": stats.process_restarts}
        _emit(result)
        raise


def double_interrupt_scenario(*, folder: str, evidence: str) -> None:
    """A second Ctrl-C while the cleanup's ``shutdown`` waits for a slow render
    (process backend). Afterwards the interpreter carries on, as a notebook does."""
    import signal

    from autofit_jaxviz.payload import BestFit
    from autofit_jaxviz.render.worker import QuickUpdateWorker

    _terminal_sigint()
    _logging()
    scribe = Scribe(folder, evidence, hold_call=1)
    worker = QuickUpdateWorker(scribe, backend="process", name="double-interrupt")
    worker.submit(BestFit(1.0, np.ones(3), 1))
    scribe.started.wait(HOLD_SECONDS)
    worker.submit(BestFit(2.0, np.full(3, 2.0), 2))
    child = worker._process_render.pid
    waiting = threading.Event()
    original_flush = worker.flush

    def flush(timeout: float | None = None) -> bool:
        waiting.set()  # observation only: shutdown is about to wait for the renderer
        return original_flush(timeout)

    worker.flush = flush  # type: ignore[method-assign]
    main = threading.main_thread().ident

    def second_ctrl_c() -> None:
        if waiting.wait(HOLD_SECONDS):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=second_ctrl_c, daemon=True).start()
    interrupted = False
    try:
        try:
            raise KeyboardInterrupt  # the first Ctrl-C, in the sampler
        finally:
            worker.shutdown(HOLD_SECONDS)  # the cleanup autofit runs on the way out
    except KeyboardInterrupt:
        interrupted = True
    alive = sorted(child_pids())
    _emit({"interrupted": interrupted, "child": child, "alive_children": alive,
           "child_alive": not gone_within(child, 0)})
    # let a surviving render finish; from a daemon thread, because a render process
    # terminated inside the event's wait leaves the event's condition broken
    threading.Thread(target=scribe.release.set, daemon=True).start()
    worker.shutdown(HOLD_SECONDS)
