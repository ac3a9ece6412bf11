"""BlackJAX: a live best-fit picture for its stock loops, by wrapping the algorithm.

::

    nuts = live_algorithm(blackjax.nuts, draw)                  # the one line
    warmup = blackjax.window_adaptation(nuts, logdensity)       # stock BlackJAX from here on
    (state, parameters), _ = warmup.run(key, position, num_steps=500)
    sampler = nuts(logdensity, **parameters)
    state, history = blackjax.util.run_inference_algorithm(key, sampler, 1000,
                                                           initial_state=state)
    nuts.close(state)                                           # optional: full-dpi final

``live_algorithm`` returns an object with the API BlackJAX's adaptation and
loops use (``init``, ``build_kernel``, and a call that builds the sampling
algorithm). Its state is the algorithm's own state with a
:class:`~autofit_jaxviz.BestFitTracker` beside it (attribute reads such as
``state.position`` go to the algorithm's state). Kernels built by
``build_kernel`` (what ``window_adaptation`` runs) are the warm-up; steps of
the sampling algorithm are sampling: from the first, the picture follows the
best sample, so the last picture is the highest-``logdensity`` state the
sampling returns. ``jax.vmap`` over chains calls back once per step at most.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.phases import PhasedTracker
from autofit_jaxviz.device.tracker import TrackerState, _positive_int
from autofit_jaxviz.live import LiveView
from autofit_jaxviz.payload import BestFit

try:
    from blackjax.base import SamplingAlgorithm
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autofit_jaxviz.blackjax needs BlackJAX: pip install 'autofit_jaxviz[blackjax]'"
    ) from error


class LiveState(NamedTuple):
    """The algorithm's state, the tracker, and whether sampling has begun."""

    inner: Any
    tracker: TrackerState
    sampling: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


class LiveAlgorithm:
    """``algorithm`` (``blackjax.nuts``, ``blackjax.hmc``, ``blackjax.mala``...) with
    its best state drawn live. Build it with :func:`live_algorithm`."""

    def __init__(self, algorithm: Any, view: LiveView, *, every: int = 1,
                 transform: Callable[[Any], Any] | None = None) -> None:
        _check_algorithm(algorithm, transform)
        # BlackJAX's adaptation reads build_kernel's and the kernel's signatures
        # (which integrator / extra parameters to pass): show it the algorithm's own
        def build_kernel(*args: Any, **kwargs: Any) -> Callable[..., tuple[LiveState, Any]]:
            return self._build_kernel(*args, **kwargs)

        self.build_kernel = functools.wraps(algorithm.build_kernel)(build_kernel)
        self.algorithm = algorithm
        self.view = view
        self.transform = transform
        self._phases = PhasedTracker(view, every=every)

    @property
    def callbacks(self) -> int:
        """Host callbacks received so far (warm-up and sampling)."""
        return self._phases.callbacks

    def init(self, position: Any, logdensity_fn: Callable[[Any], Any], *args: Any,
             **kwargs: Any) -> LiveState:
        jnp = load_jax()[1]
        inner = self.algorithm.init(position, logdensity_fn, *args, **kwargs)
        tracker = self._phases.init(inner.position, inner.logdensity)
        return LiveState(inner, tracker, jnp.bool_(False))

    def _follow(self, state: LiveState, inner: Any, sampling: bool) -> LiveState:
        jnp = load_jax()[1]
        tracker = self._phases.follow(
            state.tracker, inner.position, inner.logdensity, sampling=jnp.bool_(sampling),
            restart=~state.sampling if sampling else False, transform=self.transform)
        return LiveState(inner, tracker, jnp.bool_(sampling))

    def _build_kernel(self, *args: Any, **kwargs: Any) -> Callable[..., tuple[LiveState, Any]]:
        """The warm-up's kernel: what ``window_adaptation`` steps."""
        kernel = self.algorithm.build_kernel(*args, **kwargs)

        @functools.wraps(kernel)
        def live_kernel(rng_key: Any, state: LiveState, *rest: Any, **options: Any) -> Any:
            inner, info = kernel(rng_key, _inner_of(state), *rest, **options)
            return self._follow(state, inner, sampling=False), info

        return live_kernel

    def __call__(self, logdensity_fn: Callable[[Any], Any], *args: Any,
                 **kwargs: Any) -> SamplingAlgorithm:
        """The sampling algorithm, as ``blackjax.nuts(logdensity_fn, ...)`` builds it."""
        sampler = self.algorithm(logdensity_fn, *args, **kwargs)

        def init(position: Any, rng_key: Any = None) -> LiveState:
            inner = sampler.init(position, rng_key)
            jnp = load_jax()[1]
            return LiveState(inner, self._phases.init(inner.position, inner.logdensity),
                             jnp.bool_(False))

        def step(rng_key: Any, state: LiveState, *args: Any, **kwargs: Any) -> Any:
            inner, info = sampler.step(rng_key, _inner_of(state), *args, **kwargs)
            return self._follow(state, inner, sampling=True), info

        return SamplingAlgorithm(init, step)

    def close(self, result: Any = None, timeout: float | None = None) -> bool:
        """After the run: wait for ``result`` (the final state) and the callbacks,
        then draw the final best at full resolution."""
        return self.view.close(timeout, wait_for=result)

    def __repr__(self) -> str:
        return f"LiveAlgorithm({self.algorithm!r}, view={self.view!r})"


def _check_algorithm(algorithm: Any, transform: Any) -> None:
    for needed in ("init", "build_kernel"):
        if not callable(getattr(algorithm, needed, None)):
            raise TypeError(
                f"live_algorithm needs a BlackJAX algorithm such as blackjax.nuts (with "
                f"init and build_kernel), got {type(algorithm).__name__}: {algorithm!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of the position, got {transform!r}")


def _inner_of(state: Any) -> Any:
    if not isinstance(state, LiveState):
        raise TypeError(
            "a live_algorithm kernel needs the state its own init built (a LiveState), got "
            f"{type(state).__name__}; build the state with the live algorithm's init")
    return state.inner


def live_algorithm(algorithm: Any, draw: Callable[[BestFit], Any], *, every: int = 1,
                   transform: Callable[[Any], Any] | None = None,
                   **view_options: Any) -> LiveAlgorithm:
    """Wrap a BlackJAX algorithm so that ``draw(best)`` shows its best state live.

    ``best.parameters`` is the position (or ``transform(position)``, run on the
    device only when a report fires, e.g. to constrained parameters),
    ``best.log_likelihood`` the state's ``logdensity``, ``best.step`` the step
    that found it (counted from the start of the warm-up). ``every`` thins
    warm-up reports; ``view_options`` go to :class:`~autofit_jaxviz.live.LiveView`.
    """
    _check_algorithm(algorithm, transform)
    _positive_int("every", every)
    name = getattr(algorithm, "__name__", None) or type(algorithm).__name__
    view_options.setdefault("name", f"live[{name}]")
    return LiveAlgorithm(algorithm, LiveView(draw, **view_options), every=every,
                         transform=transform)
