"""autofit's own example Gaussian, with a quick update that leaves evidence.

A module of its own (not a test file) so a render process can import
the analysis class.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import autofit as af
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autofit_jaxviz.flags import LiveUpdates
from autofit_jaxviz.render.png import write_png_atomically

N_DATA = 100


def gaussian_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N_DATA)
    truth = af.ex.Gaussian(centre=50.0, normalization=25.0, sigma=10.0)
    data = truth.model_data_from(xvalues=x) + np.random.default_rng(seed).normal(0, 0.1, N_DATA)
    return data, np.full(N_DATA, 0.1)


def gaussian_model() -> af.Model:
    model = af.Model(af.ex.Gaussian)
    model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
    model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
    model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)
    return model


class MarkedAnalysis(LiveUpdates, af.ex.Analysis):
    """Counts evaluations, remembers this process's best, and marks every quick update.

    ``best_dir``: when set, every process appends each new best of its own to
    ``best-<pid>.txt`` there (for forked pools, whose evaluations the parent
    never sees). ``fail``: the quick update raises instead of drawing.
    """

    def __init__(self, *args, best_dir: str | None = None, fail: bool = False,
                 wait_for_picture_after: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.wait_for_picture_after = wait_for_picture_after
        self.evaluations = 0
        self.best = (-np.inf, None)
        self.best_dir = best_dir
        self.fail = fail

    def log_likelihood_function(self, instance, *args, **kwargs):
        value = super().log_likelihood_function(instance, *args, **kwargs)
        if self.is_jax:
            return value  # traced: no Python-side bookkeeping possible
        self.evaluations += 1
        if self.evaluations == self.wait_for_picture_after:
            _wait_for_a_picture()
        # only points autofit can accept: it gives a point outside the priors -inf
        if np.isfinite(value) and value > self.best[0] and in_prior(_params(instance)):
            self.best = (float(value), _params(instance))
            if self.best_dir is not None:
                with open(Path(self.best_dir) / f"best-{os.getpid()}.txt", "a") as f:
                    f.write(f"{float(value)!r} {' '.join(map(repr, self.best[1]))}\n")
        return value

    def perform_quick_update(self, paths, instance):
        if self.fail:
            raise ValueError("this visualizer always fails")
        fig = Figure(figsize=(4, 3))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(self.data, "k.")
        ax.plot(np.asarray(instance.model_data_from(xvalues=np.arange(N_DATA))), "r-")
        image = Path(paths.image_path)
        write_png_atomically(fig, image / "fit.png")
        with open(image / "markers.txt", "a") as f:
            values = " ".join(map(repr, _params(instance)))
            f.write(f"{values} {self.evaluations} {os.getpid()}\n")


def _wait_for_a_picture(timeout: float = 120.0) -> None:
    """Hold the sampler until the first quick update is on disk: "drawn while the
    search runs" without depending on how busy the machine is."""
    from autonerves import conf

    deadline = time.monotonic() + timeout
    while not list(Path(conf.instance.output_path).rglob("markers.txt")):
        if time.monotonic() > deadline:
            raise TimeoutError("no quick update was drawn while the sampler waited")
        time.sleep(0.02)


def _params(instance) -> tuple[float, float, float]:
    return (float(instance.centre), float(instance.normalization), float(instance.sigma))


def read_markers(root: Path) -> list[tuple[tuple[float, float, float], int, int]]:
    """Every quick update drawn under ``root``: (parameters, evaluations then, pid)."""
    found = sorted(Path(root).rglob("markers.txt"))
    assert len(found) == 1, f"expected one markers.txt under {root}, found {found}"
    rows = []
    for line in found[0].read_text().splitlines():
        *values, evaluations, pid = line.split()
        rows.append((tuple(float(v) for v in values), int(evaluations), int(pid)))
    return rows


@functools.cache
def _prior_bounds() -> tuple[tuple[float, float], ...]:
    return tuple((p.lower_limit, p.upper_limit) for p in gaussian_model().priors_ordered_by_id)


def in_prior(parameters: tuple[float, ...]) -> bool:
    """Whether a point lies inside :func:`gaussian_model`'s priors (autofit gives a
    point outside them a log-likelihood of -inf, whatever the analysis computed)."""
    return all(low <= value <= high
               for (low, high), value in zip(_prior_bounds(), parameters, strict=True))


class StateAnalysis(LiveUpdates, af.ex.Analysis):
    """A quick update whose every pixel depends on the drawing process's state:
    a workspace config (``visualize/jaxviz_test.yaml``: dpi and which panels),
    matplotlib's rcParams, and where autofit's paths put the picture."""

    def perform_quick_update(self, paths, instance):
        from autonerves import conf

        try:
            picture = conf.instance["visualize"]["jaxviz_test"]["picture"]
            dpi, residuals = int(picture["dpi"]), bool(picture["residuals"])
        except KeyError:  # no workspace config pushed: the packaged defaults
            dpi, residuals = 50, False
        model = np.asarray(instance.model_data_from(xvalues=np.arange(N_DATA)))
        fig = Figure(figsize=(4, 3), dpi=dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 if residuals else 1, squeeze=False)[0]
        axes[0].plot(self.data, "k.")
        axes[0].plot(model, "r-")
        axes[0].set_title(self.title())
        if residuals:
            axes[1].plot(self.data - model)
        write_png_atomically(fig, Path(paths.image_path) / "fit.png", dpi=dpi)

    def title(self) -> str:
        return f"{self.data.sum():.3f}"


class JaxStateAnalysis(StateAnalysis):
    """The same, computed with JAX: its title shows JAX's precision."""

    supports_jax_visualization = True

    def title(self) -> str:
        import jax.numpy as jnp

        total = jnp.sum(jnp.asarray(self.data) / 3.0)
        return f"{total.dtype} {float(total)!r}"


def quick_updates_in_a_fresh_worker(fitness, steps: int) -> dict:
    """Run in a ``spawn`` pool worker: the fitness arrives unpickled and is fed
    as a sampler would feed it, past its quick-update cadence. What did this
    process start?"""
    from reliability_helpers import child_pids

    import autofit_jaxviz.autofit.hub as hub_module
    from autofit_jaxviz.render import lifecycle
    from autofit_jaxviz.render.process import render_process_counts

    for step in range(steps):
        fitness.manage_quick_update(np.array([50.0, 25.0, 10.0 + step * 1e-3]), -1.0 + step)
    return {"pid": os.getpid(), "class": type(fitness).__name__,
            "hubs": len(hub_module.hubs), "workers": len(list(lifecycle._live_workers)),
            "render_processes": render_process_counts()["started"],
            "children": sorted(child_pids())}
