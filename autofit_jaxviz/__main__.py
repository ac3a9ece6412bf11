"""``python -m autofit_jaxviz demo|view [options]`` (also the ``autofit-jaxviz`` script)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per entry point (``demo``, ``view``)."""
    from autofit_jaxviz import demo

    parser = argparse.ArgumentParser(
        prog="autofit-jaxviz",
        description="Live quick-update pictures of a Bayesian fit while the sampler keeps "
        "running, including fully jitted JAX samplers.",
    )
    commands = parser.add_subparsers(dest="command", title="commands")
    demo_parser = commands.add_parser(
        "demo",
        help="fit a simulated galaxy with jitted NUTS and watch the best fit live",
        description="Simulate a 100x100 pixel image of an elliptical Sersic galaxy with "
        "Gaussian noise and fit it with BlackJAX NUTS (warm-up included) running as one "
        f"jitted lax.scan. A BestFitTracker in the scan hands every improved best fit to a "
        f"latest-only render worker, which keeps DIR/{demo.IMAGE_NAME} up to date (data, best "
        "model, normalised residuals, best log-likelihood against step) while the sampler "
        "runs. The terminal shows progress and, at the end, the sampler's steps per second; "
        "compare with --no-viz to see what watching costs.",
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.command)
    from autofit_jaxviz.viewer import cli as viewer

    view_parser = commands.add_parser(
        "view",
        help="serve a live web page of every fit under a folder (or --export one as a GIF)",
        description="List every fit found under FOLDER (running, finished, failed) on a local "
        "web page that shows each fit's newest picture as soon as it is written (pushed by "
        "the server, no reload), its best log-likelihood against time, and a slider through "
        "its history of pictures. Listens on 127.0.0.1 only unless told otherwise; on a "
        "remote node forward the port: ssh -N -L 8765:127.0.0.1:8765 NODE.",
    )
    viewer.add_arguments(view_parser)
    view_parser.set_defaults(handler=viewer.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad options, as argparse does)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        if args.command is None:
            parser.error("missing COMMAND; choose from: demo, view "
                         "(try: autofit-jaxviz demo --help)")
    except SystemExit as exit_:  # --help, or a bad option (argparse already printed why)
        return exit_.code if isinstance(exit_.code, int) else 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
