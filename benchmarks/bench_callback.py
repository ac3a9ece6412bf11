"""Cost of reporting the best fit out of a fully jitted sampler.

A random-walk Metropolis sampler in one ``lax.scan`` on a 64x64 2-D Gaussian
image model with 6 parameters (x, y, sigma, amplitude, background,
ellipticity), timed against the same loop with no hook:

* a callback every step (the stateless ``report`` hook);
* the :class:`BestFitTracker` (callback only when the best improved), with
  ``every=1``, with ``every=`` the chunk length, and with ``check_every=50``;
* ``track`` every step plus ``maybe_report`` from an outer scan of 50-step
  chunks (no ``lax.cond`` in the inner loop);
* the chunked loop autofit's BlackJAX search uses today: the scan split into
  Python-driven chunks with a host update between chunks.

Once for a single chain (~10-20 us per step on a CPU core) and once for 1,000
walkers per step. Times exclude compilation (each case runs once first) and
use ``block_until_ready`` plus ``jax.effects_barrier``.

    python benchmarks/bench_callback.py [--quick] [--repeats N]

Runs unchanged on a CUDA machine (whatever ``jax.devices()[0]`` is).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autofit_jaxviz import BestFitTracker, HostSink, report

PIXELS = 64
TRUTH = np.array([31.3, 33.7, 4.2, 10.0, 1.0, 0.2], np.float32)  # x, y, sigma, amp, bg, e
NOISE = 0.5
STEP_SCALE = np.array([0.05, 0.05, 0.03, 0.05, 0.01, 0.01], np.float32)
START = np.array([30.0, 35.0, 5.0, 8.0, 0.8, 0.0], np.float32)


def _image(theta: jax.Array, yy: jax.Array, xx: jax.Array) -> jax.Array:
    x, y, sigma, amp, bg, e = theta
    dx, dy = xx - x, yy - y
    r2 = (dx * dx) * (1.0 + e) + (dy * dy) * (1.0 - e)
    return bg + amp * jnp.exp(-0.5 * r2 / (sigma * sigma))


def make_model() -> Callable[[jax.Array], jax.Array]:
    """The log-likelihood of the 6-parameter image model for one parameter vector."""
    yy, xx = jnp.mgrid[0:PIXELS, 0:PIXELS].astype(jnp.float32)
    rng = np.random.default_rng(7)
    clean = np.asarray(_image(jnp.asarray(TRUTH), yy, xx))
    data = jnp.asarray(clean + rng.normal(0, NOISE, clean.shape).astype(np.float32))

    def log_likelihood(theta: jax.Array) -> jax.Array:
        resid = (data - _image(theta, yy, xx)) / NOISE
        return -0.5 * jnp.sum(resid * resid)

    return log_likelihood


class _Count:
    """A host target that only counts (the renderer is not what is measured)."""

    def __init__(self) -> None:
        self.n = 0
        self.host_calls = 0

    def submit(self, payload: object) -> bool:
        self.n += 1
        return True


def _mh_step(loglike, key, theta, ll):
    """One random-walk Metropolis step for one chain, or a batch under vmap."""
    k1, k2 = jax.random.split(key)
    prop = theta + STEP_SCALE * jax.random.normal(k1, theta.shape)
    ll_prop = loglike(prop)
    accept = jnp.log(jax.random.uniform(k2, ll.shape)) < ll_prop - ll
    theta = jnp.where(accept[..., None], prop, theta)
    return theta, jnp.where(accept, ll_prop, ll)


def build_cases(walkers: int, steps: int, chunk: int, check_every: int):
    """Every case as ``(name, run)``: ``run()`` executes the whole sampler once.

    Returns the cases and the counting targets so the report can say how many
    host calls each made.
    """
    one = make_model()
    loglike = one if walkers == 1 else jax.vmap(one)
    shape = (6,) if walkers == 1 else (walkers, 6)
    theta0 = jnp.broadcast_to(jnp.asarray(START), shape)
    ll0 = loglike(theta0)
    key0 = jax.random.key(0)
    counts: dict[str, _Count] = {}
    sinks: list[HostSink] = []

    def sink(name: str | None) -> HostSink:
        counts[name] = _Count()
        sinks.append(HostSink(counts[name]))
        return sinks[-1]

    def plain(n_steps: int):
        def body(carry, key):
            theta, ll = _mh_step(loglike, key, *carry)
            return (theta, ll), None

        @jax.jit
        def run(key, theta, ll):
            (theta, ll), _ = lax.scan(body, (theta, ll), jax.random.split(key, n_steps))
            return theta, ll

        return run

    def every_step():
        s = sink("callback every step")

        def body(carry, key):
            theta, ll = _mh_step(loglike, key, *carry)
            report(s, theta, ll)
            return (theta, ll), None

        @jax.jit
        def run(key):
            (theta, ll), _ = lax.scan(body, (theta0, ll0), jax.random.split(key, steps))
            return theta, ll

        return run

    def tracked(name: str, **options):
        tracker = BestFitTracker(sink(name), **options)

        def body(carry, key):
            theta, ll, state = carry
            theta, ll = _mh_step(loglike, key, theta, ll)
            return (theta, ll, tracker.update(state, theta, ll)), None

        @jax.jit
        def run(key):
            state = tracker.init(jnp.zeros(6, jnp.float32))
            carry = (theta0, ll0, state)
            (theta, ll, state), _ = lax.scan(body, carry, jax.random.split(key, steps))
            return theta, ll, tracker.report_final(state)

        return run

    def nested(name: str | None, inner: int):
        """Scans of ``inner`` steps inside a scan: ``track`` inside, ``maybe_report`` outside.

        With ``name=None`` the same loop shape without any hook (its own baseline:
        on XLA:CPU the nesting alone changes the speed of the loop).
        """
        tracker = BestFitTracker(sink(name)) if name else None

        def inner_body(carry, key):
            theta, ll, state = carry
            theta, ll = _mh_step(loglike, key, theta, ll)
            if tracker is not None:
                state = tracker.track(state, theta, ll)
            return (theta, ll, state), None

        def outer_body(carry, keys):
            carry, _ = lax.scan(inner_body, carry, keys)
            theta, ll, state = carry
            if tracker is not None:
                state = tracker.maybe_report(state)
            return (theta, ll, state), None

        @jax.jit
        def run(key):
            state = None if tracker is None else tracker.init(jnp.zeros(6, jnp.float32))
            keys = jax.random.split(key, steps).reshape(steps // inner, inner)
            (theta, ll, state), _ = lax.scan(outer_body, (theta0, ll0, state), keys)
            return theta, ll, None if tracker is None else tracker.report_final(state)

        return run

    def chunked(name: str):
        count = _Count()
        counts[name] = count
        run_chunk = plain(chunk)

        def run(key):
            theta, ll = theta0, ll0
            best = -np.inf
            for k in jax.random.split(key, steps // chunk):
                theta, ll = run_chunk(k, theta, ll)
                # the host update autofit does between chunks: fetch, compare, submit
                count.host_calls += 1
                lls = np.asarray(ll).reshape(-1)
                i = int(np.argmax(lls))
                if lls[i] > best:
                    best = float(lls[i])
                    count.submit(np.asarray(theta).reshape(-1, 6)[i])
            return theta, ll

        return run

    base = plain(steps)
    flat, shaped = "no hook", f"no hook, {check_every}-step scans inside a scan"
    per = f"track + maybe_report per {check_every} steps"
    # (name, run, the no-hook case it is compared with, its counter or None)
    cases = [
        (flat, lambda key: base(key, theta0, ll0), flat, None),
        ("callback every step", every_step(), flat, "callback every step"),
        ("tracker, every=1", tracked("tracker, every=1"), flat, "tracker, every=1"),
        (
            f"tracker, every={chunk}",
            tracked(f"tracker, every={chunk}", every=chunk),
            flat,
            f"tracker, every={chunk}",
        ),
        (
            f"tracker, check_every={check_every}",
            tracked(f"tracker, check_every={check_every}", check_every=check_every),
            flat,
            f"tracker, check_every={check_every}",
        ),
        (f"chunked, {steps // chunk} chunks of {chunk}", chunked("chunked"), flat, "chunked"),
        (shaped, nested(None, check_every), flat, None),
        (per, nested(per, check_every), shaped, per),
    ]
    return cases, counts, sinks, key0


def _time(run, key, sinks: list[HostSink]) -> float:
    for s in sinks:  # each run is a new fit: forget the previous run's host best
        s.reset()
    t0 = time.perf_counter()
    jax.block_until_ready(run(key))
    jax.effects_barrier()
    return time.perf_counter() - t0


def measure(walkers: int, steps: int, chunk: int, check_every: int, repeats: int) -> list[list]:
    cases, counts, sinks, key = build_cases(walkers, steps, chunk, check_every)
    for _, run, _, _ in cases:  # compile and warm up every case first
        _time(run, key, sinks)
    received = {id(s): s.stats().received for s in sinks}
    for c in counts.values():
        c.n = c.host_calls = 0
    times: dict[str, list[float]] = {case[0]: [] for case in cases}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits every case
        for name, run, _, _ in cases:
            times[name].append(_time(run, key, sinks))
    for s in sinks:
        s.target.host_calls = s.stats().received - received[id(s)]
    rows = []
    for name, _, base, count_key in cases:
        t, b = times[name], times[base]
        c = None if count_key is None else counts[count_key]
        rows.append(
            [
                name if base == "no hook" or name == base else f"{name} (vs the row above)",
                f"{min(t) / steps * 1e6:.1f}",
                f"{min(t) / min(b):.2f}x",
                f"{statistics.median(t) / statistics.median(b):.2f}x",
                "-" if c is None else str(c.host_calls // repeats),
                "-" if c is None else str(c.n // repeats),
            ]
        )
    return rows


def _table(rows: list[list]) -> str:
    cols = [
        "case",
        "us/step (min)",
        "min vs no hook (same loop shape)",
        "median vs no hook",
        "host calls/run",
        "fits handed on/run",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def run(repeats: int = 3, quick: bool = False) -> str:
    """The Markdown section for BENCHMARKS.md."""
    repeats = max(1 if quick else 3, repeats)
    single = (2_000, 200, 50) if quick else (20_000, 1_000, 50)
    batch = (200, 20, 20) if quick else (2_000, 100, 50)
    device = jax.devices()[0]
    command = "python benchmarks/bench_callback.py" + (" --quick" if quick else "")
    lines = [
        "### Best-fit hook inside a jitted sampler (device/)\n",
        f"Command: `{command}` · date {_dt.date.today().isoformat()} · "
        f"{os.cpu_count()} cores · Python {platform.python_version()} · jax {jax.__version__} "
        f"on {jax.default_backend()} ({device.device_kind}) · {repeats} repeats, "
        "ratios to the same loop with no hook\n",
    ]
    for walkers, (steps, chunk, check_every) in ((1, single), (1_000, batch)):
        lines.append(
            f"\n{walkers} walker{'s' if walkers > 1 else ''} per step, {steps:,} steps "
            f"of random-walk Metropolis on a {PIXELS}x{PIXELS} image, 6 parameters:\n\n"
        )
        lines.append(_table(measure(walkers, steps, chunk, check_every, repeats)))
    lines.append(
        "\nGoals: tracker <= 1.2x on the single chain, <= 1.02x on the 1,000-walker batch, "
        "and faster than the chunked loop.\n"
    )
    return "".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per case (min 3)")
    args = parser.parse_args(argv)
    if args.repeats < 3 and not args.quick:
        parser.error(f"--repeats must be at least 3 for min/median, got {args.repeats}")
    text = run(repeats=args.repeats, quick=args.quick)
    print(text)
    return text


if __name__ == "__main__":
    main()
