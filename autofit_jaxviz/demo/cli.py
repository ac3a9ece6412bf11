"""``python -m autofit_jaxviz demo``: the demo's command-line options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autofit_jaxviz.backends import BACKENDS
from autofit_jaxviz.demo.run import (
    DEFAULT_OUTPUT,
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    IMAGE_NAME,
    run_demo,
)
from autofit_jaxviz.demo.sampler import MissingDependencyError, require_sampler

if TYPE_CHECKING:
    pass


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _output_folder(text: str) -> Path:
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder path, got {text!r}")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, but {text!r} is an existing file")
    return path


def _port(text: str) -> int:
    value = _int_at_least(0, "a port 0-65535")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (used by ``python -m autofit_jaxviz demo``)."""
    parser.add_argument(
        "--output", type=_output_folder, default=DEFAULT_OUTPUT, metavar="DIR",
        help=f"folder for the live image {IMAGE_NAME}, created if needed "
             f"(default: ./{DEFAULT_OUTPUT})")
    parser.add_argument(
        "--steps", type=_int_at_least(1, "a positive integer"), default=DEFAULT_STEPS,
        metavar="N", help=f"NUTS steps after warm-up (default: {DEFAULT_STEPS})")
    parser.add_argument(
        "--warmup", type=_int_at_least(0, "an integer >= 0"), default=DEFAULT_WARMUP,
        metavar="N", help="warm-up steps (BlackJAX's window_adaptation: step size and mass "
                          "matrix), jitted with the sampling; 0 skips adaptation "
                          f"(default: {DEFAULT_WARMUP})")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="process",
        help="where images are drawn: a separate render process, a background thread, or "
             "inline in the sampler's host callback (sync, which stalls the sampler) "
             "(default: process)")
    parser.add_argument(
        "--seed", type=_int_at_least(0, "an integer >= 0"), default=0, metavar="N",
        help="seed of the simulated noise and of the sampler (default: 0)")
    parser.add_argument(
        "--every", type=_int_at_least(1, "a positive integer"), default=1, metavar="N",
        help="during warm-up, report an improved best fit to the host only every N steps "
        "(sampling improvements are always reported; default: 1)")
    parser.add_argument(
        "--view", nargs="?", type=_port, const=8765, default=None,
        metavar="PORT", help="also serve the live page of the fit (python -m autofit_jaxviz "
        "view DIR) on 127.0.0.1:PORT (default port 8765; 0: any free port)")
    parser.add_argument(
        "--no-viz", dest="visualize", action="store_false",
        help="the baseline: the same sampler with no tracker, no callbacks and no images, "
             "to compare steps/s")


def command(args: argparse.Namespace) -> int:
    """Run the demo for parsed arguments: 0 on success, 1 when a package is missing,
    2 when the output folder cannot be created (a bad ``--output``)."""
    try:
        require_sampler()  # before touching the disk
    except MissingDependencyError as error:
        print(f"autofit-jaxviz demo: {error}", file=sys.stderr)
        return 1
    if args.every > 1 and (args.warmup == 0 or not args.visualize):
        print(f"autofit-jaxviz demo: error: argument --every: {args.every} thins the warm-up's "
              f"reports, but {'--warmup is 0' if args.visualize else '--no-viz draws nothing'}",
              file=sys.stderr)
        return 2
    try:
        Path(args.output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"autofit-jaxviz demo: error: argument --output: cannot create folder "
              f"{str(args.output)!r}: {error.strerror or error}", file=sys.stderr)
        return 2
    run_demo(
        args.output,
        steps=args.steps,
        warmup=args.warmup,
        backend=args.backend,
        seed=args.seed,
        every=args.every,
        visualize=args.visualize,
        progress=True,
        viewer_port=args.view,
    )
    return 0
