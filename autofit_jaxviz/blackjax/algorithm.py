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
sampling returns (or the highest ``score(state)``, when one is given: the
log likelihood, say). ``jax.vmap`` over chains calls back once per step at
most (plus one ``progress(steps_done)`` tick every ``progress_every`` steps,
when asked for: a progress line).

With ``reports="between_chunks"`` no host callback is compiled into the
loops: the steps only track the best, and
``nuts.run_inference_algorithm(key, sampler, num_steps, initial_state=state)``
(BlackJAX's arguments and samples, run in chunks) reads it between chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from blackjax.base import SamplingAlgorithm

from autofit_jaxviz.blackjax.state import LiveState, _inner_of
from autofit_jaxviz.device.batching import is_tracer
from autofit_jaxviz.device.chunked import chunk_plan, run_in_chunks
from autofit_jaxviz.device.lazy_jax import load_jax
from autofit_jaxviz.device.phases import PhasedTracker
from autofit_jaxviz.device.progress import ProgressCall, ticker
from autofit_jaxviz.device.tracker import _positive_int
from autofit_jaxviz.live import BestFitView, LiveView
from autofit_jaxviz.payload import BestFit


class LiveAlgorithm:
    """``algorithm`` (``blackjax.nuts``, ``blackjax.hmc``, ``blackjax.mala``...) with
    its best state drawn live. Build it with :func:`live_algorithm`."""

    def __init__(self, algorithm: Any, view: BestFitView, *, every: int | None = None,
                 transform: Callable[[Any], Any] | None = None,
                 score: Callable[[Any], Any] | None = None,
                 progress: Callable[[int], Any] | None = None,
                 progress_every: int | None = None, reports: str = "in_loop") -> None:
        _check_algorithm(algorithm, transform, score)
        _check_reports(reports, every, progress_every)
        progress_every = _check_progress(progress, progress_every)
        # BlackJAX's adaptation reads build_kernel's and the kernel's signatures
        # (which integrator / extra parameters to pass): show it the algorithm's own
        def build_kernel(*args: Any, **kwargs: Any) -> Callable[..., tuple[LiveState, Any]]:
            return self._build_kernel(*args, **kwargs)

        self.build_kernel = functools.wraps(algorithm.build_kernel)(build_kernel)
        self.algorithm = algorithm
        self.view = view
        self.transform = transform
        self.score = score
        self.reports = reports
        self._phases = PhasedTracker(view, every=1 if every is None else every)
        self.progress = None if progress is None else ProgressCall(progress, view.name)
        # between chunks, run_inference_algorithm calls progress: no tick in the loop
        self._tick = None if self.progress is None or reports != "in_loop" else ticker(
            self.progress, progress_every)

    @property
    def callbacks(self) -> int:
        """Bests the host received so far, warm-up and sampling: callbacks from the
        loop, and reads between chunks (not progress ticks)."""
        return self._phases.callbacks

    def _score_of(self, inner: Any) -> Any:
        if self.score is None:
            return inner.logdensity
        value = self.score(inner)
        jnp = load_jax()[1]
        if jnp.shape(value) != () or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            # a vector would be taken for a batch of walkers, an integer refused
            # deeper down without naming score: say it here
            raise TypeError(
                "score(state) must return a float scalar (the value to rank states by), got "
                f"{jnp.result_type(value)} of shape {jnp.shape(value)}")
        return value

    def init(self, position: Any, logdensity_fn: Callable[[Any], Any], *args: Any,
             **kwargs: Any) -> LiveState:
        jnp = load_jax()[1]
        inner = self.algorithm.init(position, logdensity_fn, *args, **kwargs)
        tracker = self._phases.init(inner.position, self._score_of(inner))
        return LiveState(inner, tracker, jnp.bool_(False))

    def _follow(self, state: LiveState, inner: Any, sampling: bool) -> LiveState:
        jnp = load_jax()[1]
        restart = ~state.sampling if sampling else False
        if self.reports == "between_chunks":
            tracker = self._phases.track(state.tracker, inner.position, self._score_of(inner),
                                         restart=restart)
            return LiveState(inner, tracker, jnp.bool_(sampling))
        tracker = self._phases.follow(
            state.tracker, inner.position, self._score_of(inner), sampling=jnp.bool_(sampling),
            restart=restart, transform=self.transform)
        if self._tick is not None:
            self._tick(tracker.step)  # kernel steps done, warm-up and sampling together
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
            return LiveState(inner, self._phases.init(inner.position, self._score_of(inner)),
                             jnp.bool_(False))

        def step(rng_key: Any, state: LiveState, *args: Any, **kwargs: Any) -> Any:
            inner, info = sampler.step(rng_key, _inner_of(state), *args, **kwargs)
            return self._follow(state, inner, sampling=True), info

        step.live_algorithm = self  # type: ignore[attr-defined]  # run_inference_algorithm checks
        return SamplingAlgorithm(init, step)

    def run_inference_algorithm(
        self, rng_key: Any, inference_algorithm: SamplingAlgorithm, num_steps: int,
        initial_state: Any = None, initial_position: Any = None,
        transform: Callable[[Any, Any], Any] = lambda state, info: (state, info), *,
        chunk_steps: int | None = None, chunk_seconds: float | None = None,
    ) -> tuple[Any, Any]:
        """``blackjax.util.run_inference_algorithm``, run in chunks, the best drawn between them.

        The same arguments and result as BlackJAX's (the same key for each step,
        so the same samples), plus: a batch of states (chains, built by
        ``jax.vmap`` of ``init``, or of positions) with one key per chain, which
        returns what ``jax.vmap`` of BlackJAX's function over keys and states
        would. ``inference_algorithm`` is this live algorithm's sampler
        (``nuts(logdensity, ...)``). The chunks (``chunk_steps`` steps each, or
        adapted to take about ``chunk_seconds``, default 0.5) are one compiled
        program; after each the host reads the best sample and, with
        ``reports="between_chunks"``, calls ``progress(steps_done)`` (kernel
        steps, the warm-up's included; with ``"in_loop"`` the loop ticks
        instead). BlackJAX's ``progress_bar()`` instruments ``lax.scan`` and
        does not see these chunks: use ``progress``.
        """
        jax, jnp, _ = load_jax()
        who = "LiveAlgorithm.run_inference_algorithm"
        traced = (f"{who} reads the best between chunks, from the host: call it outside "
                  "jax.jit / jax.vmap (it compiles its chunks itself; for chains give a batch "
                  "of states and one key per chain)")
        if any(is_tracer(leaf) for leaf in jax.tree.leaves((rng_key, initial_state,
                                                            initial_position))):
            raise TypeError(traced)
        chunk_steps, chunk_seconds = chunk_plan(chunk_steps, chunk_seconds)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) \
                or num_steps < 0:
            raise ValueError(f"num_steps must be an integer >= 0, got {num_steps!r}")
        num_steps = int(num_steps)
        if (initial_state is None) == (initial_position is None):
            raise ValueError("give initial_state or initial_position (one of them), got "
                             + ("neither" if initial_state is None else "both"))
        if getattr(getattr(inference_algorithm, "step", None), "live_algorithm", None) is not self:
            raise TypeError(
                f"{who} needs this live algorithm's sampler (build it with nuts(logdensity, "
                f"...), nuts being what live_algorithm returned), got {inference_algorithm!r}")
        if rng_key is None:
            raise TypeError(f"{who} needs rng_key: one key, or one per chain")
        chains = _key_batch(rng_key)
        if initial_state is None and chains is not None:
            sizes = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else None
                     for leaf in jax.tree.leaves(initial_position)}
            if sizes != {chains}:
                raise ValueError(
                    f"one position per chain: got {chains} keys and initial_position with "
                    f"leading sizes {sorted(sizes, key=str)} (stack the chains' positions "
                    "along a first axis)")
        if initial_state is None:
            def start(key: Any, position: Any) -> Any:
                key, init_key = jax.random.split(key)
                return key, inference_algorithm.init(position, init_key)

            rng_key, initial_state = (start(rng_key, initial_position) if chains is None
                                      else jax.vmap(start)(rng_key, initial_position))
        leaf = jax.tree.leaves(_inner_of(initial_state, who).position)[0]
        states = None if jnp.ndim(initial_state.tracker.best_log_likelihood) == 0 \
            else int(leaf.shape[0])
        if chains != states:
            def count(n: int | None, what: str) -> str:
                return f"one {what}" if n is None else f"a batch of {n} {what}s"

            raise ValueError(
                f"one key per chain: got {count(chains, 'key')} for {count(states, 'state')} "
                "(vmap init over the positions and split the key into one per chain)")

        def one_step(state: Any, key: Any) -> Any:
            def single(key: Any, state: Any) -> Any:
                state, info = inference_algorithm.step(key, state)
                return state, transform(state, info)

            return single(key, state) if chains is None else jax.vmap(single)(key, state)

        if chains is None:
            keys = jax.random.split(rng_key, num_steps)
        else:  # (steps, chains): step i of chain c uses split(key_c, num_steps)[i]
            keys = jax.jit(lambda k: jnp.swapaxes(
                jax.vmap(lambda key: jax.random.split(key, num_steps))(k), 0, 1))(rng_key)
        if is_tracer(keys):  # made from values an outer jit closed over: traced all the same
            raise TypeError(traced)
        spec = self._phases.layout(initial_state.tracker, self.transform)

        def summarise(state: LiveState) -> tuple[Any, Any]:
            packed = self._phases.pack(state.tracker, state.sampling, self.transform)
            return packed, jnp.max(state.tracker.step)

        def on_chunk(values: tuple[Any, Any], steps: int) -> None:
            packed, steps_done = values
            self._phases.send(packed, spec)  # first: the starting state's (the warm-up's) best
            if steps and self.progress is not None and self._tick is None:  # else the loop ticks
                self.progress(steps_done)

        # chains first in the history, as jax.vmap of BlackJAX's function returns it
        return run_in_chunks(one_step, initial_state, keys, summarise, on_chunk,
                             chunk_steps=chunk_steps, chunk_seconds=chunk_seconds,
                             history_axis=0 if chains is None else 1)

    def _report_now(self, states: list[LiveState]) -> None:
        """Hand each state's best to its phase's sink, from the host (one small program)."""
        jax = load_jax()[0]
        pack = jax.jit(self._phases.pack, static_argnums=2)
        for state in states:
            if not jax.numpy.size(state.tracker.best_log_likelihood):
                continue  # an empty history (num_steps=0): no best in it
            packed = jax.device_get(pack(state.tracker, state.sampling, self.transform))
            self._phases.send(packed, self._phases.layout(state.tracker, self.transform))

    def close(self, result: Any = None, timeout: float | None = None) -> bool:
        """After the run: wait for ``result`` (the final state, or any pytree
        holding it) and the callbacks, then draw the final best at full
        resolution. With ``reports="between_chunks"`` the best is read from the
        states in ``result``."""
        if self.reports == "between_chunks" and result is not None:
            jax = load_jax()[0]
            self._report_now([leaf for leaf in jax.tree.leaves(
                result, is_leaf=lambda x: isinstance(x, LiveState)) if isinstance(leaf, LiveState)])
        return self.view.close(timeout, wait_for=result)

    def __repr__(self) -> str:
        return f"LiveAlgorithm({self.algorithm!r}, view={self.view!r})"


def _check_algorithm(algorithm: Any, transform: Any, score: Any = None) -> None:
    for needed in ("init", "build_kernel"):
        if not callable(getattr(algorithm, needed, None)):
            raise TypeError(
                f"live_algorithm needs a BlackJAX algorithm such as blackjax.nuts (with "
                f"init and build_kernel), got {type(algorithm).__name__}: {algorithm!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of the position, got {transform!r}")
    if score is not None and not callable(score):
        raise TypeError(f"score must be a function of the algorithm's state, got {score!r}")


REPORTS = ("in_loop", "between_chunks")


def _check_reports(reports: Any, every: Any, progress_every: Any) -> None:
    if reports not in REPORTS:
        raise ValueError(f"reports must be one of {', '.join(map(repr, REPORTS))}, "
                         f"got {reports!r}")
    if reports == "between_chunks":
        for name, value in (("every", every), ("progress_every", progress_every)):
            if value is not None:
                raise ValueError(
                    f"{name}={value!r} thins reports made inside the loop; with "
                    "reports='between_chunks' there are none: run_inference_algorithm "
                    "reports (and calls progress) after each chunk, sized by chunk_steps "
                    "or chunk_seconds")


def _key_batch(key: Any) -> int | None:
    """How many chains a key (or a batch of keys) is for: ``None`` for one key."""
    jax, jnp, _ = load_jax()
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    single = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    if key.ndim == single:
        return None
    if key.ndim == single + 1:
        if not key.shape[0]:
            raise ValueError(f"rng_key: got an empty batch of keys (shape {key.shape}); "
                             "give one key, or one per chain")
        return int(key.shape[0])
    raise ValueError(f"rng_key must be one key or a 1-D batch of keys (one per chain), "
                     f"got an array of shape {key.shape}")


def _check_progress(progress: Any, progress_every: Any) -> int:
    """``progress_every`` checked (and 100 when unset); never without ``progress``."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function of the steps done, got {progress!r}")
    if progress_every is None:
        return 100
    _positive_int("progress_every", progress_every)
    if progress is None:
        raise ValueError(f"progress_every={progress_every!r} needs progress= (the function "
                         "to call with the steps done)")
    return int(progress_every)


def live_algorithm(algorithm: Any, draw: Callable[[BestFit], Any], *,
                   every: int | None = None,
                   transform: Callable[[Any], Any] | None = None,
                   score: Callable[[Any], Any] | None = None,
                   progress: Callable[[int], Any] | None = None,
                   progress_every: int | None = None,
                   reports: str = "in_loop",
                   **view_options: Any) -> LiveAlgorithm:
    """Wrap a BlackJAX algorithm so that ``draw(best)`` shows its best state live.

    ``best.parameters`` is the position (or ``transform(position)``, run on the
    device only when a report fires, e.g. to constrained parameters),
    ``best.log_likelihood`` the state's score, ``best.step`` the step that
    found it (counted from the start of the warm-up). The score is the state's
    ``logdensity`` (the log posterior) unless ``score(state)`` says otherwise,
    e.g. the log likelihood ``state.logdensity - log_prior(state.position)``;
    the best is the highest score. ``every`` thins warm-up reports.
    ``progress(steps_done)`` is called on the host every ``progress_every``
    (default 100) kernel steps, warm-up and sampling together, once per step
    for vmapped chains; it must be quick, and what it raises is logged, never
    raised into the sampler.
    ``reports="between_chunks"`` keeps host callbacks out of the jitted loops
    (on XLA's CPU runtime a loop holding one often keeps a second CPU thread
    busy, see BENCHMARKS.md): the steps only track the best, and
    :meth:`LiveAlgorithm.run_inference_algorithm` draws it between its chunks
    (the warm-up's best when sampling starts; ``close(state)`` the final one).
    ``progress`` is then called after each chunk of that method (not during
    the warm-up, nor in BlackJAX's own ``run_inference_algorithm``);
    ``every`` and ``progress_every`` are refused.
    ``view_options`` go to :class:`~autofit_jaxviz.live.LiveView`.
    """
    _check_algorithm(algorithm, transform, score)
    if every is not None:
        _positive_int("every", every)
    _check_reports(reports, every, progress_every)
    _check_progress(progress, progress_every)
    name = getattr(algorithm, "__name__", None) or type(algorithm).__name__
    view_options.setdefault("name", f"live[{name}]")
    return LiveAlgorithm(algorithm, LiveView(draw, **view_options), every=every,
                         transform=transform, score=score, progress=progress,
                         progress_every=progress_every, reports=reports)
