"""Run every benchmark in this folder and rewrite its table in BENCHMARKS.md.

Each ``bench_*.py`` module exposes ``run(repeats: int, quick: bool) -> str``
returning a Markdown section; it replaces the text between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in BENCHMARKS.md (the
markers are added at the end the first time).

    python benchmarks/run.py [--quick] [--only NAME ...] [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "BENCHMARKS.md"


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per case (min 3)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    args = parser.parse_args(argv)
    if args.repeats < 3 and not args.quick:
        parser.error(f"--repeats must be at least 3 for min/median, got {args.repeats}")
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    if args.only is not None:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
        names = [n for n in names if n in args.only]
    for name in names:
        module = importlib.import_module(f"bench_{name}")
        print(f"== {name}", flush=True)
        body = module.run(repeats=args.repeats, quick=args.quick)
        print(body, flush=True)
        if not args.no_write:
            # re-read before each write: a crash keeps what finished, and only
            # this benchmark's section is replaced
            text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
            DOC.write_text(replace_section(text, name, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
