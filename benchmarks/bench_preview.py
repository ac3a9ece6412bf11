"""What one autogalaxy quick-update picture costs, at its own dpi and at the preview dpi.

autogalaxy's real ``AnalysisImaging`` quick update (its ``fit.png`` subplot,
saved at 300 dpi with ``bbox_inches="tight"``) on a simulated 40x40 Sersic
imaging dataset (``tests/autogalaxy_helpers.py``), drawn by this library's
``AutofitRender`` in a fresh interpreter, as a render process draws it. Each
repeat draws a first picture (which pays the imports, font loading and, for a
JAX analysis, its compilation) and then ``PICTURES`` more, alternating between
the visualizer's own dpi and ``preview_dpi`` (the packaged default), so the
two are measured side by side.

    python benchmarks/run.py --only preview [--quick] [--repeats N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header, min_median, table
from bench_autofit import interleave, run_child

ROOT = Path(__file__).resolve().parents[1]
PICTURES = 4


def pictures(use_jax: bool, pictures: int, preview: float) -> dict[str, Any]:
    """In a fresh interpreter: seconds for the first picture, then for each dpi."""
    import logging
    import tempfile
    import warnings

    logging.disable(logging.INFO)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np

    t0 = time.perf_counter()
    import autofit as af
    import autogalaxy as ag
    from autogalaxy_helpers import sersic_imaging, sersic_model
    from autonerves import conf

    from autofit_jaxviz.autofit.render import AutofitRender
    from autofit_jaxviz.payload import BestFit

    imports = time.perf_counter() - t0
    conf.instance.output_path = tempfile.mkdtemp(prefix="afjv-preview-")
    model = sersic_model()
    search = af.Emcee(name="preview_bench")
    search.paths.model = model
    analysis = ag.AnalysisImaging(dataset=sersic_imaging(), use_jax=use_jax)
    renders = {dpi: AutofitRender(analysis, model, search.paths, convert=True,
                                  lock_pyplot=False, preview_dpi=dpi) for dpi in (0, preview)}
    vector = np.asarray(model.physical_values_from_prior_medians, dtype=float)
    t0 = time.perf_counter()
    renders[0](BestFit(-1.0, vector, 0))
    first = time.perf_counter() - t0
    times: dict[float, list[float]] = {0: [], preview: []}
    sizes: dict[float, int] = {}
    for k in range(pictures):
        for dpi in ((0, preview) if k % 2 == 0 else (preview, 0)):
            t0 = time.perf_counter()
            path = renders[dpi](BestFit(-1.0, vector * (1 + 1e-3 * (k + 1)), k + 1))
            times[dpi].append(time.perf_counter() - t0)
            sizes[dpi] = Path(path).stat().st_size
    return {"imports": imports, "first": first, "full": times[0], "preview": times[preview],
            "full_bytes": sizes[0], "preview_bytes": sizes[preview]}


def run(repeats: int = 3, quick: bool = False) -> str:
    from autofit_jaxviz.config import load_settings

    preview = load_settings().preview_dpi
    count = 2 if quick else PICTURES
    repeats = 1 if quick else repeats
    results = interleave({
        f"use_jax={use_jax}": (lambda use_jax=use_jax: run_child(
            "bench_preview", "pictures", {"use_jax": use_jax, "pictures": count,
                                          "preview": preview}))
        for use_jax in (False, True)}, repeats)
    rows = []
    for name, runs in results.items():
        full = [t for r in runs for t in r["full"]]
        small = [t for r in runs for t in r["preview"]]
        first = [r["first"] for r in runs]
        f_min, f_med = min_median(full)
        p_min, p_med = min_median(small)
        rows.append([name, f"{min_median(first)[1]:.2f}", f"{f_min:.2f} / {f_med:.2f}",
                     f"{p_min:.2f} / {p_med:.2f}", f"{f_med / p_med:.1f}x",
                     f"{runs[0]['full_bytes'] // 1024} / {runs[0]['preview_bytes'] // 1024}"])
    command = "python benchmarks/run.py --only preview" + (" --quick" if quick else "")
    return (header("An autogalaxy fit.png at its own dpi and at the preview dpi", command)
            + f"\nautogalaxy's `AnalysisImaging` quick update (`fit.png`, saved at 300 dpi) on "
            f"a 40x40 simulated Sersic dataset, drawn by `AutofitRender` in a fresh "
            f"interpreter; {count} pictures at each dpi per repeat, alternating, {repeats} "
            f"repeat(s); preview_dpi = {preview:g} (the packaged default).\n\n"
            + table(["analysis", "first picture s (median)", "at 300 dpi s (min / median)",
                     f"at {preview:g} dpi s (min / median)", "cheaper by (median)",
                     "file KB (300 / preview)"], rows))
