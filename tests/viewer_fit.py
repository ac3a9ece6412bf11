"""A real autofit fit for the page tests: ``viewer_fit.py OUTPUT NAME [viewer] [twice]``.

autofit's example Gaussian under Emcee, with the library on (render process)
and a likelihood slowed to about 2 ms so the fit runs for several seconds
with a quick update due every 200 evaluations.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(output: str, name: str, *options: str) -> None:
    import autofit as af
    from autofit_helpers import MarkedAnalysis, gaussian_data, gaussian_model
    from autonerves import conf

    import autofit_jaxviz.autofit as live

    class SlowAnalysis(MarkedAnalysis):
        def log_likelihood_function(self, instance, *args, **kwargs):
            time.sleep(0.002)
            return super().log_likelihood_function(instance, *args, **kwargs)

    conf.instance.output_path = output
    logging.getLogger("autofit").setLevel(logging.WARNING)
    viewer = {"viewer": True, "viewer_port": 0} if "viewer" in options else {}
    live.enable(background=True, min_render_interval=0.25, **viewer)
    data, noise = gaussian_data()
    names = [name, f"{name}_2"] if "twice" in options else [name]  # a pipeline of two
    for search_name in names:
        search = af.Emcee(name=search_name, nwalkers=20, nsteps=300,
                          iterations_per_quick_update=200, silence=True, seed=1)
        search.fit(model=gaussian_model(), analysis=SlowAnalysis(data=data, noise_map=noise))


if __name__ == "__main__":
    main(*sys.argv[1:])
