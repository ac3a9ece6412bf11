"""The examples in ``examples/`` run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_autofit_gaussian_example_writes_its_quick_update_image(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "autofit_gaussian.py"), "--steps", "60"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = list((tmp_path / "output" / "examples").rglob("fit.png"))
    assert len(images) == 1
    assert images[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quick-update image:" in proc.stdout


def test_autofit_gaussian_example_rejects_bad_steps(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "autofit_gaussian.py"), "--steps", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert "--steps must be a positive integer, got 0" in proc.stderr


@pytest.mark.slow
def test_live_fit_notebook_updates_one_image_in_place(tmp_path):
    import nbformat
    from test_display import KernelFlavour, run_notebook

    notebook = nbformat.read(ROOT / "examples" / "live_fit.ipynb", as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    from importlib.metadata import version

    run = run_notebook(
        tmp_path, KernelFlavour("venv", version("ipykernel"), ()),
        [(f"cell{i}", source) for i, source in enumerate(code)],
        env={"AUTOFIT_JAXVIZ_EXAMPLE_STEPS": "300"},
    )
    fit_cell = run.cells["cell0"]
    images = [o for o in fit_cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(fit_cell.outputs) == 1
    updates = run.messages("update_display_data")
    assert len(updates) >= 2  # the first frame, then at least the final best fit
    printed = "".join(o.get("text", "") for o in run.cells["cell1"].outputs)
    assert f"image updates: {len(updates)}" in printed
    import base64

    shown = base64.b64decode(images[0]["data"]["image/png"])
    assert shown == (tmp_path / "demo_output" / "fit.png").read_bytes()  # the final frame
