"""The live demo: fit a simulated galaxy with a fully jitted NUTS sampler and watch its best fit.

What it shows: BlackJAX's NUTS through its stock ``window_adaptation`` and
``blackjax.util.run_inference_algorithm``, the two jitted as one program with
no Python between steps. :class:`~autofit_jaxviz.blackjax.LiveAlgorithm` wraps
``blackjax.nuts`` (what ``live_algorithm`` builds, here with the demo's own
view): the best fit rides in the sampler's state and the host is called only
when it improved; the host hands it to a latest-only
:class:`~autofit_jaxviz.render.worker.QuickUpdateWorker` that redraws ``fit.png``
(data, best model, normalised residuals, best log-likelihood against step)
while the sampler keeps running. The score is the log *likelihood* (the
state's log posterior minus the log prior); the picture shows the warm-up's
best state, then from the first sampling step the best sample. The progress
line is fed by the adapter's ``progress`` ticks. ``--no-viz`` runs plain
``blackjax.nuts`` through the same calls, as the baseline for the cost of
watching.

The model: an elliptical Sersic light profile on a 100x100 pixel image
(0.1 arcsec pixels) plus Gaussian noise of known sigma. Seven unconstrained
parameters, so NUTS needs no bijectors: centre ``x, y`` (arcsec), ellipticity
``g1, g2`` (mapped smoothly into the unit disc), ``log_intensity`` (at the
effective radius), ``log_radius`` (effective radius, arcsec) and
``log_index`` (Sersic index). Weak Gaussian priors on all seven keep the
posterior proper. The sampler starts well away from the truth, so the picture
visibly improves during warm-up.

The log-likelihood history in the picture: every best fit the host receives
(not only the rendered ones) is appended to a history on the host, and each
frame handed to the renderer carries the history up to its own best fit. So
the curve is complete up to the drawn fit even when the latest-only worker
skipped (superseded) frames, and it survives a restart of the render process.
Between two improvements the best is flat by definition; the curve is drawn
as steps.

The sampler runs in float32; with JAX's x64 switched on (importing autofit
does that) it follows JAX's default and runs in float64.

Nothing here imports JAX or BlackJAX at module level: the renderer (which a
``--backend process`` render process unpickles) needs only NumPy and
matplotlib, and a missing package is reported by :func:`require_sampler`.

Its parts: :mod:`.model` (the galaxy and its likelihood), :mod:`.sampler` (the
jitted NUTS run), :mod:`.figure` (the picture and the history
it carries), :mod:`.progress` (the progress line), :mod:`.run` (one run) and
:mod:`.cli` (the command line).
"""

from autofit_jaxviz.demo.cli import add_arguments, command
from autofit_jaxviz.demo.figure import DemoFrame, FitRenderer, FrameSource
from autofit_jaxviz.demo.model import (
    PARAMETER_NAMES,
    Observation,
    log_likelihood,
    physical_parameters,
    sersic_image,
    simulate,
)
from autofit_jaxviz.demo.progress import Progress
from autofit_jaxviz.demo.run import IMAGE_NAME, DemoResult, run_demo
from autofit_jaxviz.demo.sampler import MissingDependencyError, require_sampler

__all__ = [
    "IMAGE_NAME",
    "PARAMETER_NAMES",
    "DemoFrame",
    "DemoResult",
    "FitRenderer",
    "FrameSource",
    "MissingDependencyError",
    "Observation",
    "Progress",
    "add_arguments",
    "command",
    "log_likelihood",
    "physical_parameters",
    "require_sampler",
    "run_demo",
    "sersic_image",
    "simulate",
]
