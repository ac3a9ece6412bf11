"""The NumPy path works, and never tries to import JAX, when JAX cannot be imported.

Runs in a fresh interpreter whose path finder cannot see ``jax``/``jaxlib`` (and,
in the second case, autofit's config library too), exactly as on a machine
where they are not installed: ``import jax`` fails and ``find_spec`` returns
``None``. The finder records who asked, so an ``import jax`` from
autofit_jaxviz's own code fails the test even if the caller would catch the
ImportError.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import importlib.machinery
    import sys
    import traceback

    BLOCKED = set(sys.argv[1].split(","))
    EXPECT_BACKGROUND = sys.argv[2] == "1"
    attempts = []  # (module, whether autofit_jaxviz's own code asked for it)

    class Hide:  # finds nothing for BLOCKED names, as if they were not installed

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                callers = [
                    frame.filename
                    for frame in traceback.extract_stack()[:-1]
                    if not frame.filename.startswith("<frozen")
                ]
                attempts.append((name, "autofit_jaxviz" in callers[-1]))
                return None
            return importlib.machinery.PathFinder.find_spec(name, path, target)

    sys.meta_path[:] = [
        Hide if finder is importlib.machinery.PathFinder else finder
        for finder in sys.meta_path
    ]
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import numpy as np

    import autofit_jaxviz
    from autofit_jaxviz.config import load_settings
    from autofit_jaxviz.convert import contains_jax, to_host
    from autofit_jaxviz.flags import LiveUpdates, decide_backend, needs_host_conversion
    from autofit_jaxviz.payload import BestFit

    settings = load_settings()
    assert settings.background is EXPECT_BACKGROUND, settings.describe()

    class Analysis(LiveUpdates):
        pass

    mode, reason = decide_backend(settings, Analysis())
    assert mode == ("process" if EXPECT_BACKGROUND else "sync"), reason
    assert needs_host_conversion(Analysis())

    class Profile:
        def __init__(self):
            self.centre = (np.float64(0.5), np.float64(-0.5))
            self.image = np.ones((2, 2))

    vector = np.arange(3.0)
    payload = BestFit(-1.0, {"vector": vector, "profiles": [Profile()]}, step=7)
    host = to_host(payload)
    assert host is payload  # no JAX loaded: nothing to convert, nothing copied
    assert host.parameters["vector"].tolist() == [0.0, 1.0, 2.0]
    assert host.parameters["profiles"][0].image.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert host.parameters["profiles"][0].centre == (0.5, -0.5)
    assert not contains_jax(host)

    ours = [name for name, mine in attempts if mine and name.split(".")[0] in ("jax", "jaxlib")]
    assert ours == [], ours  # autofit_jaxviz never even tried to import JAX
    assert "jax" not in sys.modules
    print("OK", autofit_jaxviz.__name__, settings.sources["background"])
    """
)


@pytest.mark.parametrize(
    ("blocked", "expect_background"),
    [
        # autonerves present: the workspace config in the cwd is honoured
        ("jax,jaxlib", True),
        # no autofit/autonerves: packaged default only
        ("jax,jaxlib,autonerves,autofit", False),
    ],
)
def test_numpy_path_without_jax(tmp_path: Path, blocked: str, expect_background: bool) -> None:
    workspace = tmp_path / "config"
    workspace.mkdir()
    (workspace / "general.yaml").write_text("jaxviz:\n  background: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFIT_JAXVIZ_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, blocked, "1" if expect_background else "0"],
        cwd=tmp_path,  # autonerves' default conf.instance reads <cwd>/config
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.startswith("OK autofit_jaxviz")
    if expect_background:
        assert str(workspace / "general.yaml") in result.stdout
    else:
        assert "packaged default" in result.stdout
