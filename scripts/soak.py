"""Run test files again and again; report every test that failed at least once.

A test that fails once in ten runs is a bug to find, not to rerun. Usage:

    python scripts/soak.py [--runs 10] [TEST_PATH ...]

Default paths: the autofit, reliability and concurrency suites. Each run is a
fresh pytest process with a JUnit report; after each run the script also
checks that no render process (``multiprocessing.spawn``) outlived it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

DEFAULT_PATHS = ["tests/test_autofit.py", "tests/test_reliability.py", "tests/test_concurrency.py"]


def _render_processes() -> set[str]:
    """Orphaned spawned processes (parent gone, adopted by PID 1): what a run left
    behind, whatever else runs on the machine."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    orphans = set()
    for line in out.stdout.splitlines():
        pid, ppid, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else ("", "", "")
        if ppid == "1" and "multiprocessing.spawn import spawn_main" in args:
            orphans.add(pid)
    return orphans


def _failures(report: Path) -> tuple[int, list[str]]:
    root = ET.parse(report).getroot()
    cases, failed = 0, []
    for case in root.iter("testcase"):
        cases += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return cases, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("paths", nargs="*", default=DEFAULT_PATHS)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    failed_in: Counter[str] = Counter()
    orphans = 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            before = _render_processes()
            report = Path(tmp) / f"run{run}.xml"
            started = time.monotonic()
            code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   f"--junitxml={report}", *args.paths],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            cases, failed = _failures(report) if report.exists() else (0, ["<no report>"])
            left = _render_processes() - before
            orphans += len(left)
            failed_in.update(failed)
            print(f"run {run}/{args.runs}: {cases} tests, {len(failed)} failed, exit {code}, "
                  f"{len(left)} render processes left, {time.monotonic() - started:.0f} s",
                  flush=True)
    print(f"\n{args.runs} runs of {' '.join(args.paths)}")
    if failed_in:
        for name, count in failed_in.most_common():
            print(f"  failed {count}/{args.runs}: {name}")
    else:
        print("  every test passed in every run")
    print(f"  render processes left behind: {orphans}")
    return 1 if failed_in or orphans else 0


if __name__ == "__main__":
    sys.exit(main())
