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
