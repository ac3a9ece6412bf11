"""An ipykernel 6.29 to run next to the venv's ipykernel 7, without a second venv.

``ipykernel>=6.29`` admits both major versions and they route thread output
differently, so the kernel tests run on both. ipykernel 6.29.5 (and
``nest_asyncio``, which 6.29 needs and 7 does not) is pip-installed from PyPI
with ``--no-deps --target`` into ``.cache/ipykernel629``; everything else comes
from the venv. A kernel started with that folder first on ``PYTHONPATH``
imports ipykernel 6.29. Run this file to build it by hand; the tests build it
when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / ".cache" / "ipykernel629"
VERSION = "6.29.5"
PINS = (f"ipykernel=={VERSION}", "nest_asyncio==1.6.0")
_STAMP = ".installed.json"


def ensure(python: str = sys.executable) -> Path:
    """Return the folder holding ipykernel 6.29, installing it first if needed.

    Installs into a temporary folder beside the target and renames it into
    place, so an interrupted install never leaves a half-built one behind.
    """
    stamp = TARGET / _STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == list(PINS):
        return TARGET
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=TARGET.parent, prefix=".ipykernel629-"))
    try:
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(tmp), *PINS],
            check=True,
            env={**os.environ, "PYTHONNOUSERSITE": "1"},
        )
        (tmp / _STAMP).write_text(json.dumps(list(PINS)))
        tmp.chmod(0o755)  # mkdtemp makes it private
        if TARGET.exists():
            shutil.rmtree(TARGET)
        os.replace(tmp, TARGET)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TARGET


if __name__ == "__main__":
    print(ensure())
