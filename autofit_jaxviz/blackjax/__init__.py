"""BlackJAX with a live best-fit picture: :func:`live_algorithm` (NUTS, HMC, MALA...
through ``window_adaptation`` and ``run_inference_algorithm``) and :func:`live_smc`.

``algorithm`` has the MCMC adapter, ``smc`` the SMC one, ``state`` the state both carry.
"""

from __future__ import annotations

try:
    import blackjax.base  # noqa: F401 - say what is missing before the submodules fail
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autofit_jaxviz.blackjax needs BlackJAX: pip install 'autofit_jaxviz[blackjax]'"
    ) from error

from autofit_jaxviz.blackjax.algorithm import LiveAlgorithm, live_algorithm
from autofit_jaxviz.blackjax.smc import LiveSMC, live_smc
from autofit_jaxviz.blackjax.state import LiveState

__all__ = ["LiveAlgorithm", "LiveSMC", "LiveState", "live_algorithm", "live_smc"]
