"""``python -m autofit_jaxviz view [FOLDER]``: serve the live page, or ``--export`` a fit's film."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default="output",
                        help="the folder to list fits under (default: ./output, autofit's)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="required to listen on an address other machines can reach; "
                        "the page then needs a random access token, printed in its address")
    parser.add_argument("--poll", type=float, metavar="SECONDS",
                        help="look for changes every SECONDS instead of waiting for the "
                        "kernel's file notifications: for fits written by other machines "
                        "to a network file system (NFS, Lustre, GPFS), which raise none here")
    parser.add_argument("--export", metavar="FILE",
                        help="write the history of one fit as an animated GIF and exit")
    parser.add_argument("--fit", metavar="ID",
                        help="with --export: which fit (its folder below FOLDER, as the page "
                        "lists it); default: the only fit, or the newest one")
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)


def command(args: argparse.Namespace) -> int:
    from autofit_jaxviz.viewer.fits import FitFolders
    from autofit_jaxviz.viewer.server import is_loopback, serve

    if not 0 <= args.port <= 65535:
        print(f"view: --port must be 0-65535, got {args.port}", file=sys.stderr)
        return 2
    if args.poll is not None and not 0.05 <= args.poll <= 3600:
        print(f"view: --poll must be 0.05-3600 seconds, got {args.poll}", file=sys.stderr)
        return 2
    try:
        folders = FitFolders(args.folder)
    except FileNotFoundError as error:
        print(f"view: {error}", file=sys.stderr)
        return 2
    if args.export:
        return _export(folders, args)
    token = None
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(f"view: --host {args.host} lets other machines reach the page; pass "
                  "--allow-remote to do so (the page then needs an access token), or "
                  "keep 127.0.0.1 and forward the port over SSH", file=sys.stderr)
            return 2
        token = secrets.token_urlsafe(24)

    def announce(url: str) -> None:
        print(f"autofit_jaxviz view: serving the fits under {folders.root} at {url}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(folders.root, host=args.host, port=args.port, token=token,
                    announce=announce, parent_pid=args.parent_pid, stop=stop, poll=args.poll)

    try:
        asyncio.run(main())
    except OSError as error:  # the port is taken, the address is not this machine's
        print(f"view: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


def _export(folders: Any, args: argparse.Namespace) -> int:
    from autofit_jaxviz.viewer.export import export_animation

    fits = folders.scan()
    if args.fit is not None:
        folder = folders.folder(args.fit)
        if folder is None:
            print(f"view: no fit {args.fit!r} under {folders.root}; fits: "
                  f"{', '.join(sorted(fits)) or 'none'}", file=sys.stderr)
            return 2
    elif not fits:
        print(f"view: no fit under {folders.root} to export", file=sys.stderr)
        return 2
    else:
        folder = max(fits.values(), key=lambda f: (f / "status.json").stat().st_mtime)
    try:
        frames = export_animation(folder, args.export)
    except ValueError as error:
        print(f"view: {error}", file=sys.stderr)
        return 2
    print(f"autofit_jaxviz view: wrote {frames} frames of {folder} to {Path(args.export)}")
    return 0
