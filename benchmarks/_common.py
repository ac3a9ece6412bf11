"""Shared helpers for the benchmark scripts: timing summaries and table text."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def header(title: str, command: str) -> str:
    """The lines every table starts with: what ran, when, and on what."""
    today = _dt.date.today().isoformat()
    return (
        f"### {title}\n\n"
        f"Command: `{command}` · date {today} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} on {sys.platform}\n"
    )


def min_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def table(columns: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def alternate_cpu(variants: dict[str, Callable[[int], Any]], repeats: int,
                  wait: Callable[[Any], Any]) -> dict[str, list[tuple[float, float]]]:
    """Run each variant ``repeats`` times, alternated (``variant(repeat)``, then
    ``wait`` on its result): wall seconds and process CPU time over wall time per run."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, run in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            wait(run(repeat))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            runs[name].append((wall, cpu / wall))
    return runs


def busy_thread_lines(runs: dict[str, list[tuple[float, float]]]) -> list[str]:
    """One line per variant: wall min / median (the upper one for an even count), and
    the runs where CPU/wall > 1.5 (a second thread busy for most of the run)."""
    lines = []
    for name, results in runs.items():
        walls = sorted(w for w, _ in results)
        busy = sum(ratio > 1.5 for _, ratio in results)
        each = ", ".join(f"{w:.2f} s @ {r:.2f}" for w, r in results)
        lines.append(f"{name:14s} wall min {walls[0]:.3f} s, median "
                     f"{walls[len(walls) // 2]:.3f} s; CPU/wall > 1.5 in {busy} of "
                     f"{len(results)} runs ({each})")
    return lines
