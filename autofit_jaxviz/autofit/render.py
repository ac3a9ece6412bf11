"""What runs on the worker for an autofit fit: the instance built and drawn off the sampler."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.render.preview import preview_dpi

logger = logging.getLogger(__name__)

#: The image a quick update is expected to write (autofit's LiveDisplay looks for it too).
QUICK_UPDATE_IMAGE = "fit.png"

class ResultFit(BestFit):
    """The maximum-likelihood sample of autofit's result, drawn after the fit:
    autofit has already written the final ``model.results`` for it."""

    __slots__ = ()


#: Held while pyplot draws: autofit's full update (main thread) and a quick
#: update on the render thread both use pyplot's global state.
PYPLOT_LOCK = threading.RLock()


class AutofitRender:
    """Draw one quick update: what runs on the worker (thread or render process).

    It holds the constant part (analysis, model, output paths), sent once to a
    render process; each call gets only a :class:`BestFit` with the parameter
    vector. The instance is built here, not on the sampler thread.
    """

    def __init__(self, analysis: Any, model: Any, paths: Any, *, convert: bool,
                 lock_pyplot: bool, preview_dpi: float = 0.0) -> None:
        self.analysis = analysis
        #: quick updates are saved at most at this dpi; the result's picture at its own
        self.preview_dpi = preview_dpi
        self.model = model
        self.paths = paths
        self.convert = convert
        self.lock_pyplot = lock_pyplot
        self.has_visual = True

    def warm_up(self) -> None:
        """Run by a render process before it says it is ready: the imports and
        font loading of a first picture, paid before the fit needs one."""
        from autofit.text import text_util  # noqa: F401

        from autofit_jaxviz.render.png import warm_up_matplotlib

        warm_up_matplotlib()

    def __call__(self, best: BestFit) -> Path | None:
        from autofit.text import text_util

        from autofit_jaxviz.convert import to_host

        vector = to_host(best.parameters) if self.convert else best.parameters
        if not isinstance(best, ResultFit):  # autofit wrote the result's own model.results
            info = text_util.result_max_lh_info_from(
                max_log_likelihood_sample=np.asarray(vector, dtype=float).tolist(),
                max_log_likelihood=float(best.log_likelihood),
                model=self.model,
            )
            self.paths.output_model_results(result_info="\n".join(info))
        if not self.has_visual:
            return None
        # May raise (a vector outside a profile's domain): the worker logs it
        # and the fit goes on; model.results above is written regardless.
        instance = self.model.instance_from_vector(vector=vector, xp=np)
        dpi = None if isinstance(best, ResultFit) else self.preview_dpi
        try:
            with PYPLOT_LOCK if self.lock_pyplot else contextlib.nullcontext(), \
                    preview_dpi(dpi):
                self.analysis.perform_quick_update(self.paths, instance)
        except NotImplementedError:
            # autofit keeps writing model.results for such analyses: so do we
            self.has_visual = False
            logger.info("%s has no perform_quick_update: only model.results is updated",
                        type(self.analysis).__name__)
            return None
        image = Path(self.paths.image_path) / QUICK_UPDATE_IMAGE
        return image if image.exists() else None

