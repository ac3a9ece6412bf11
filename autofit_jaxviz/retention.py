"""Which pictures a history keeps: the newest ones, and fewer and fewer older ones.

A fit of hours draws hundreds of pictures; keeping all of them costs disk,
keeping only the newest loses how the fit got there. The rule here keeps the
newest ``keep_recent`` plus pictures at geometrically spaced numbers, so disk
grows with the logarithm of the count and the first pictures survive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


def spaced_numbers(ratio: float, limit: int) -> set[int]:
    """The picture numbers up to ``limit`` that are kept however old: 1, then
    each next one ``ratio`` times the last (at least one more). The set never
    depends on how many pictures there are, so a picture kept once stays kept
    and the rule never needs an old one back; it has about ``log(limit) /
    log(ratio)`` members, however close to 1 the ratio."""
    numbers = set()
    value = 1.0
    while value <= limit:
        numbers.add(int(value))
        value = max(value * ratio, math.floor(value) + 1.0)
    return numbers


def kept(numbers: Iterable[int], *, keep_recent: int, keep_ratio: float) -> list[int]:
    """Which of ``numbers`` the retention rule keeps: the newest ``keep_recent``
    and the geometrically spaced older ones (:func:`spaced_numbers`)."""
    ordered = sorted(numbers)
    if not ordered:
        return []
    recent = set(ordered[-keep_recent:])
    spaced = spaced_numbers(keep_ratio, ordered[-1])
    return [n for n in ordered if n in recent or n in spaced]


@dataclass(frozen=True, slots=True)
class Retention:
    """How many pictures a history keeps: see :func:`kept`."""

    keep_recent: int = 50
    keep_ratio: float = 1.25

    def __post_init__(self) -> None:
        if (not isinstance(self.keep_recent, int) or isinstance(self.keep_recent, bool)
                or self.keep_recent < 1):
            raise ValueError(f"keep_recent must be an integer >= 1 (pictures), got "
                             f"{self.keep_recent!r}")
        if (not isinstance(self.keep_ratio, int | float) or isinstance(self.keep_ratio, bool)
                or not math.isfinite(self.keep_ratio) or not self.keep_ratio > 1):
            raise ValueError(f"keep_ratio must be a finite number > 1, got {self.keep_ratio!r}")
