"""The live page: page load, push latency, server CPU, history disk use.

A writer in this process records a real matplotlib picture (a 4x3 inch fit
at the preview dpi, 80) into a fit's history once a second, as a fit with one
quick update per second does; the page server runs as its own process
(``python -m autofit_jaxviz view``, as a user starts it) and a real headless
Chromium shows the page. Latency is from just before the picture is recorded
(copied into the history, index and status replaced) to the moment the page
has loaded the new picture and swapped it in (the page's own
``window.jaxvizShown`` log, same clock). Server CPU is the server process's
user + system time over the updates, as a share of one core.

    python benchmarks/run.py --only viewer
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import header, percentile, table

UPDATES = 50
INTERVAL = 1.0
DISK_PICTURES = 1000


def pictures(count: int) -> list[bytes]:
    """Distinct fit-like pictures (data, model, residuals) at 80 dpi."""
    import numpy as np
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    out = []
    for i in range(count):
        fig = Figure(figsize=(4, 3), dpi=80)
        top, bottom = fig.subplots(2, 1, sharex=True)
        data = np.sin(x) + rng.normal(0, 0.2, x.size)
        model = (1 - 0.8 ** (i + 1)) * np.sin(x)
        top.plot(x, data, "k.", ms=2)
        top.plot(x, model, "r-")
        top.set_title(f"best fit #{i}")
        bottom.plot(x, data - model, "b.", ms=2)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        out.append(buffer.getvalue())
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_run(quick: bool) -> dict[str, float]:
    import numpy as np

    from autofit_jaxviz.history import PictureHistory
    from autofit_jaxviz.payload import BestFit
    from tests import browser

    updates = 8 if quick else UPDATES
    images = pictures(10)
    with tempfile.TemporaryDirectory() as root:
        history = PictureHistory(Path(root) / "fit" / "image" / "fit_history", name="bench")
        history.record(images[0], BestFit(-1000.0, np.zeros(3), 0))
        server = subprocess.Popen([sys.executable, "-m", "autofit_jaxviz", "view", root,
                                   "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().rsplit(" at ", 1)[1].strip()
            with browser.chromium() as driver:
                loads = []
                for _ in range(3):
                    driver.get(url)
                    loads.append(_wait(driver, "const e = window.jaxvizShown[0];"
                                       "return e ? e.at - performance.timeOrigin : null;"))
                written = {}
                cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
                for i in range(1, updates + 1):
                    next_at = wall0 + i * INTERVAL
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    t = time.time()
                    n = history.record(images[i % len(images)],
                                       BestFit(-1000.0 + i, np.zeros(3), i))
                    written[n] = t
                last = max(written)
                _wait(driver, f"return window.jaxvizShown.some(e => e.n === {last});")
                cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
                shown = driver.execute_script("return window.jaxvizShown")
        finally:
            server.terminate()
            server.wait(30)
    first_shown = {}
    for entry in shown:
        first_shown.setdefault(entry["n"], entry["at"] / 1000)
    latencies = sorted((first_shown[n] - t) * 1000 for n, t in written.items()
                       if n in first_shown)
    return {"load_ms": statistics.median(loads), "load_min_ms": min(loads),
            "latency_median_ms": statistics.median(latencies),
            "latency_p95_ms": percentile(latencies, 95), "latency_max_ms": latencies[-1],
            "shown": len(latencies), "updates": updates, "cpu_share": cpu}


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(script)


def disk_use(quick: bool) -> dict[str, float]:
    import numpy as np

    from autofit_jaxviz.history import PictureHistory
    from autofit_jaxviz.payload import BestFit

    count = 100 if quick else DISK_PICTURES
    images = pictures(10)
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "fit_history"
        history = PictureHistory(folder, name="disk")
        t0 = time.perf_counter()
        for i in range(count):
            history.record(images[i % len(images)], BestFit(float(i), np.zeros(3), i))
        per_picture = (time.perf_counter() - t0) / count
        files = list(folder.iterdir())
        total = sum(f.stat().st_size for f in files)
        kept = sum(1 for f in files if f.suffix == ".png")
    return {"pictures": count, "kept": kept, "bytes": total,
            "mean_picture": statistics.mean(len(p) for p in images),
            "record_ms": per_picture * 1000}


def run(repeats: int, quick: bool) -> str:
    del repeats  # one run of 50 updates gives the latency distribution asked for
    from tests import browser

    reason = browser.missing()
    if reason is not None:
        return header("Live page", "python benchmarks/run.py --only viewer") + \
            f"\nNot run: {reason}.\n"
    live = live_run(quick)
    disk = disk_use(quick)
    text = header("Live page: load, push latency, server CPU, history disk use",
                  "python benchmarks/run.py --only viewer")
    text += (f"\nOne fit's history gets a real 4x3 in, 80 dpi matplotlib picture once a "
             f"second ({live['updates']} updates); the page server runs as its own process "
             "(`python -m autofit_jaxviz view`), a headless Chromium (Debian's) shows the "
             "page. Latency: picture recorded -> shown in the page (loaded off screen and "
             "swapped in).\n\n")
    text += table(
        ["measure", "value"],
        [["page load -> first picture shown (median / min of 3 loads)",
          f"{live['load_ms']:.0f} ms / {live['load_min_ms']:.0f} ms"],
         [f"push latency, median over {live['shown']} updates",
          f"{live['latency_median_ms']:.0f} ms"],
         ["push latency, p95 / max", f"{live['latency_p95_ms']:.0f} ms / "
          f"{live['latency_max_ms']:.0f} ms"],
         ["updates shown / written", f"{live['shown']} / {live['updates']}"],
         ["server CPU at one update per second (share of one core)",
          f"{100 * live['cpu_share']:.2f}%"],
         [f"history of {disk['pictures']} pictures: pictures kept",
          f"{disk['kept']} (newest 50 + spaced older ones)"],
         [f"history of {disk['pictures']} pictures: disk use",
          f"{disk['bytes'] / 1e6:.2f} MB (mean picture {disk['mean_picture'] / 1e3:.1f} kB; "
          f"all {disk['pictures']} would be {disk['pictures'] * disk['mean_picture'] / 1e6:.1f}"
          " MB)"],
         ["recording one picture (copy, index, status)", f"{disk['record_ms']:.2f} ms"]])
    return text


if __name__ == "__main__":
    print(run(repeats=3, quick="--quick" in sys.argv))
