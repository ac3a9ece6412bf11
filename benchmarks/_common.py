"""Shared helpers for the benchmark scripts: timing summaries and table text."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys


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
