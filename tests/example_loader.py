"""Load a script from ``examples/`` as a module, so tests call its ``run`` directly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the render process can import its draw by name
    spec.loader.exec_module(module)
    return module


def run_example_script(name: str, cwd: Path, *args: str) -> tuple[str, dict]:
    """Run ``examples/<name>.py`` as a user would (its draw in ``__main__``, so it
    goes to the render process by value); returns its stdout and JSON summary."""
    import json
    import os
    import subprocess

    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])
