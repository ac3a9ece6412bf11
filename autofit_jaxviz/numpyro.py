"""NumPyro: a live best-fit picture for an ``MCMC`` run, by wrapping its kernel.

::

    kernel = live_kernel(NUTS(model), draw)          # the one line
    MCMC(kernel, num_warmup=500, num_samples=1000).run(key, x, y)
    kernel.close(mcmc)                               # wait for the run, full-dpi final

The wrapper runs the user's kernel unchanged and carries a
:class:`~autofit_jaxviz.BestFitTracker` beside its state, inside NumPyro's own
jitted loop: the best state is kept on the device, the host is called only
when it improved (a ``lax.cond``), and only then are its parameters mapped to
the model's constrained space (the kernel's ``postprocess_fn``: the sample
sites and deterministic sites, named as in the model). The score is NumPyro's
``-potential_energy`` (the log joint density in the unconstrained space the
kernel samples). The warm-up's best is shown while it runs; once sampling
starts the picture follows the best post-warm-up state, so the last picture is
the highest-density sample the run returns (with ``thinning`` > 1: of every
post-warm-up state, kept or not). ``chain_method`` sequential, vectorized
(one callback per step at most, reduced on the device) and parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.phases import PhasedTracker
from autofit_jaxviz.device.tracker import TrackerState, _positive_int
from autofit_jaxviz.live import LiveView
from autofit_jaxviz.payload import BestFit

try:
    from numpyro.infer.mcmc import MCMCKernel
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autofit_jaxviz.numpyro needs NumPyro: pip install 'autofit_jaxviz[numpyro]'"
    ) from error


class _LiveFields(NamedTuple):
    inner: Any
    tracker: TrackerState


class LiveState(_LiveFields):
    """The wrapped kernel's state and the tracker beside it.

    Attribute reads the state does not have go to the kernel's own state, so
    NumPyro's field collection (``z``, ``potential_energy``,
    ``adapt_state.step_size``...) and ``mcmc.last_state.z`` work as before;
    ``_replace`` of the kernel's fields (``MCMC.run`` after ``warmup()`` or
    with ``post_warmup_state`` sets ``rng_key``) replaces them in its state.
    """

    __slots__ = ()

    def _replace(self, **changes: Any) -> LiveState:
        inner = changes.pop("inner", self.inner)
        tracker = changes.pop("tracker", self.tracker)
        return LiveState(inner._replace(**changes) if changes else inner, tracker)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


class LiveKernel(MCMCKernel):
    """An ``MCMCKernel`` that runs ``kernel`` and reports its best state to ``view``.

    Build it with :func:`live_kernel`. ``every`` thins warm-up reports (at most
    one per ``every`` steps per chain); post-warm-up improvements, which are
    rare, are always reported, so the final picture is never a stale one.
    """

    def __init__(self, kernel: MCMCKernel, view: LiveView, *, every: int = 1) -> None:
        _check_kernel(kernel)
        self.inner = kernel
        self.view = view
        self._phases = PhasedTracker(view, every=every)
        self._num_warmup = 0
        self._vectorized = False

    @property
    def callbacks(self) -> int:
        """Host callbacks received so far (warm-up and sampling): the storm check."""
        return self._phases.callbacks

    # -- MCMCKernel ------------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self.inner.model

    @property
    def sample_field(self) -> str:
        return self.inner.sample_field

    @property
    def default_fields(self) -> tuple[str, ...]:
        return self.inner.default_fields

    @property
    def is_ensemble_kernel(self) -> bool:
        return False

    def get_diagnostics_str(self, state: LiveState) -> str:
        return self.inner.get_diagnostics_str(state.inner)

    def postprocess_fn(self, args: Any, kwargs: Any) -> Callable[[Any], Any]:
        return self.inner.postprocess_fn(args, kwargs)

    def init(self, rng_key: Any, num_warmup: int, init_params: Any, model_args: Any,
             model_kwargs: Any) -> LiveState:
        jax, _, _ = load_jax()
        from numpyro.util import is_prng_key

        inner = self.inner.init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        self._num_warmup = int(num_warmup)
        z, log_density = self._fit_of(inner)
        # chain_method="vectorized": the kernel gets a batch of keys and batches
        # its chains itself (one state each), so each gets a tracker
        self._vectorized = not is_prng_key(rng_key)
        if self._vectorized:
            tracker = jax.vmap(self._phases.init)(z, log_density)
        else:
            tracker = self._phases.init(z, log_density)
        return LiveState(inner, tracker)

    def sample(self, state: LiveState, model_args: Any, model_kwargs: Any) -> LiveState:
        jax, jnp, _ = load_jax()
        inner = self.inner.sample(state.inner, model_args, model_kwargs)
        z, log_density = self._fit_of(inner)
        iteration = getattr(inner, "i", None)
        if iteration is None:  # a kernel that does not count: all of it is "sampling"
            iteration = jnp.full(jnp.shape(log_density), self._num_warmup + 2, jnp.int32)
        constrain = self.inner.postprocess_fn(model_args, model_kwargs)

        def follow(tracker: TrackerState, z: Any, log_density: Any, iteration: Any) -> Any:
            return self._phases.follow(
                tracker, z, log_density, sampling=iteration > self._num_warmup,
                restart=iteration == self._num_warmup + 1, transform=constrain)

        if self._vectorized:  # the kernel batches its chains itself: one tracker each
            follow = jax.vmap(follow)
        return LiveState(inner, follow(state.tracker, z, log_density, iteration))

    # -- helpers -----------------------------------------------------------------------

    def _fit_of(self, inner: Any) -> tuple[Any, Any]:
        field = self.inner.sample_field
        energy = getattr(inner, "potential_energy", None)
        if energy is None:
            raise TypeError(
                f"live_kernel: {type(self.inner).__name__}'s state {type(inner).__name__} has "
                "no potential_energy field to rank its states by")
        return getattr(inner, field), -energy

    def close(self, mcmc: Any = None, timeout: float | None = None) -> bool:
        """After ``mcmc.run``: wait for the run (``chain_method="parallel"`` returns
        before its chains finish) and its callbacks, then draw the final best at
        full resolution. True if everything finished within ``timeout``."""
        return self.view.close(timeout, wait_for=None if mcmc is None else mcmc.last_state)

    def __getattr__(self, name: str) -> Any:
        # what MCMC reads from the kernel besides the MCMCKernel API (``_sample_fn``)
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"LiveKernel({self.inner!r}, view={self.view!r})"


def _check_kernel(kernel: Any) -> None:
    if not isinstance(kernel, MCMCKernel):
        raise TypeError(
            f"live_kernel needs a NumPyro MCMCKernel (NUTS, HMC, SA, BarkerMH...), "
            f"got {type(kernel).__name__}: {kernel!r}")
    if kernel.is_ensemble_kernel:
        raise TypeError(
            f"live_kernel: ensemble kernels ({type(kernel).__name__}) are not supported; "
            "their state holds many walkers, use NUTS, HMC, SA or BarkerMH")


def live_kernel(kernel: MCMCKernel, draw: Callable[[BestFit], Any], *, every: int = 1,
                **view_options: Any) -> LiveKernel:
    """Wrap a NumPyro kernel so that ``draw(best)`` shows its best state while it runs.

    ``best.parameters`` is a dict of the model's sites in constrained space
    (NumPy arrays), ``best.log_likelihood`` the log density, ``best.step`` the
    kernel step (per chain) that found it. ``view_options`` go to
    :class:`~autofit_jaxviz.live.LiveView` (``image``, ``backend``,
    ``render_budget``, ``preview_dpi``...).
    """
    _check_kernel(kernel)
    _positive_int("every", every)
    view_options.setdefault("name", f"live[{type(kernel).__name__}]")
    return LiveKernel(kernel, LiveView(draw, **view_options), every=every)
