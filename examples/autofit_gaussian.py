"""Live quick updates for a real PyAutoFit fit of autofit's example Gaussian.

    python examples/autofit_gaussian.py [--steps 1500] [--backend thread|process]

Every 100 likelihood evaluations autofit asks for a quick update; autofit_jaxviz
draws it on its render thread (or render process) while Emcee keeps sampling,
and the final image is always the best fit of the whole run. Images are in
``output/examples/autofit_gaussian/<hash>/image/fit.png``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import autofit as af  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import autofit_jaxviz.autofit  # noqa: E402
from autofit_jaxviz.flags import LiveUpdates  # noqa: E402
from autofit_jaxviz.render.png import write_png_atomically  # noqa: E402


class GaussianAnalysis(LiveUpdates, af.ex.Analysis):
    """autofit's example analysis plus a quick update that is safe off the main thread
    (it draws on its own Figure, never through pyplot), hence ``LiveUpdates``."""

    def perform_quick_update(self, paths, instance):
        x = np.arange(self.data.shape[0])
        model = np.asarray(instance.model_data_from(xvalues=x))
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.errorbar(x, self.data, yerr=self.noise_map, fmt="k.", ms=3, label="data")
        ax.plot(x, model, "r-", label="current best fit")
        ax.set_xlabel("x")
        ax.set_ylabel("flux")
        ax.set_title(f"centre {instance.centre:.2f}, sigma {instance.sigma:.2f}")
        ax.legend()
        write_png_atomically(fig, paths.image_path / "fit.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="Emcee steps (default 1500)")
    parser.add_argument("--backend", choices=["thread", "process"], default=None,
                        help="default: the configuration's jaxviz.backend (process)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")

    x = np.arange(100)
    truth = af.ex.Gaussian(centre=50.0, normalization=25.0, sigma=10.0)
    data = truth.model_data_from(xvalues=x) + np.random.default_rng(1).normal(0, 0.5, 100)
    model = af.Model(af.ex.Gaussian)
    model.centre = af.UniformPrior(lower_limit=0.0, upper_limit=100.0)
    model.normalization = af.LogUniformPrior(lower_limit=1e-2, upper_limit=1e2)
    model.sigma = af.UniformPrior(lower_limit=0.0, upper_limit=30.0)

    # the one line that switches the library on (config or env vars work too)
    autofit_jaxviz.autofit.enable(background=True, backend=args.backend)

    search = af.Emcee(path_prefix="examples", name="autofit_gaussian", nwalkers=30,
                      nsteps=args.steps, iterations_per_quick_update=100, seed=1)
    result = search.fit(model=model, analysis=GaussianAnalysis(data=data,
                                                               noise_map=np.full(100, 0.5)))
    print("max log likelihood instance:", result.max_log_likelihood_instance.centre,
          result.max_log_likelihood_instance.sigma)
    print("quick-update image:", next(search.paths.image_path.glob("fit.png"), None))


if __name__ == "__main__":
    main()
