"""Cost of ``submit`` on the sampler's thread while a render is in progress.

Compared in the same run with autofit's own ``BackgroundQuickUpdate.submit``
(the step it performs per quick update: lock, replace the pending request,
wake its thread). Two situations:

* held: the renderer is parked inside a render (GIL free): the bare cost;
* drawing: the renderer draws a matplotlib figure in a loop, so the sampler
  competes with it for the GIL, as in a real fit.
"""

from __future__ import annotations

import io
import threading
import time

from _common import header, min_median, percentile, table

from autofit_jaxviz.render.worker import QuickUpdateWorker


def _draw(payload: object) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(200), [((i * 7919) % 97) for i in range(200)])
    ax.set_title(str(payload))
    fig.savefig(io.BytesIO(), format="png")


class _Held:
    """A render that parks until released, signalling when it is parked."""

    def __init__(self) -> None:
        self.parked = threading.Event()
        self.release = threading.Event()

    def __call__(self, payload: object) -> None:
        self.parked.set()
        self.release.wait()


def _time_calls(submit, n: int) -> list[float]:
    clock = time.perf_counter_ns
    out = [0.0] * n
    for i in range(n):
        t0 = clock()
        submit(i)
        out[i] = (clock() - t0) / 1000.0
    return out


def _ours(render, n: int, held: _Held | None) -> list[float]:
    w = QuickUpdateWorker(render, name="bench")
    w.submit(-1)
    if held is not None:
        held.parked.wait(30)
    times = _time_calls(w.submit, n)
    if held is not None:
        held.release.set()
    w.shutdown(60)
    return times


def _autofit(render, n: int, held: _Held | None) -> list[float]:
    from autofit.non_linear.quick_update import BackgroundQuickUpdate

    class Analysis:
        def perform_quick_update(self, paths, instance):
            render(instance)

    analysis, paths = Analysis(), None
    bq = BackgroundQuickUpdate(convert_jax=False)
    bq.submit(analysis, paths, -1)
    if held is not None:
        held.parked.wait(30)
    times = _time_calls(lambda i: bq.submit(analysis, paths, i), n)
    if held is not None:
        held.release.set()
    bq.shutdown(60)
    return times


def run(repeats: int = 5, quick: bool = False) -> str:
    n = 5_000 if quick else 100_000
    repeats = max(1, repeats if not quick else 1)
    try:
        import autofit  # noqa: F401

        impls = {"autofit_jaxviz": _ours, "autofit BackgroundQuickUpdate": _autofit}
    except ImportError:
        impls = {"autofit_jaxviz": _ours}
    rows = []
    for situation in ("held", "drawing"):
        results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in impls}
        for _ in range(repeats):
            for name, fn in impls.items():  # side by side, alternating
                held = _Held() if situation == "held" else None
                render = held if held is not None else _draw
                times = sorted(fn(render, n, held))
                results[name][0].append(percentile(times, 50))
                results[name][1].append(percentile(times, 99))
        for name, (medians, p99s) in results.items():
            med_min, med_med = min_median(medians)
            p99_min, p99_med = min_median(p99s)
            rows.append([situation, name, f"{med_min:.2f} / {med_med:.2f}",
                         f"{p99_min:.2f} / {p99_med:.2f}"])
    text = header(
        f"submit() cost on the sampler thread ({n:,} calls x {repeats} repeats)",
        "make bench  (python benchmarks/run.py --only submit)",
    )
    text += (
        "\nMicroseconds per call, min / median over the repeats of each repeat's "
        "median and p99. Goal: p99 below 20 us.\n\n"
    )
    return text + table(["renderer", "implementation", "median us", "p99 us"], rows)


if __name__ == "__main__":
    print(run())
