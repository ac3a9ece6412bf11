"""When the next render may start: a minimum interval and a render budget.

The budget keeps rendering to a share ``b`` of one core's time: after renders
that cost ``c`` seconds (the mean of the last few, so one cheap picture does
not open the gate for a burst), the next starts ``c / b`` after the start of
the last, and not before it ended (for a render whose cost is its wall time,
a wait of ``c * (1 - b) / b`` after it). ``min_interval`` counts from the last
start; the later of the two applies. The worker skips both for a flush, a
shutdown or a final payload.

A render's cost is the core time it took: for a render process, the time the
parent spent on the call less the child's wall time plus the child's CPU time
(all its threads). A render process runs at a lower priority, so on a busy
machine it waits for a core; counting that wait would starve the stream of
pictures without sparing the sampler anything. In a thread (or a render
process that fell back to one) the cost is the wall time of the call.

The first render does not gate: it pays one-off set-up (imports, fonts, and in
a fresh render process a JAX compile of the visualizer's fit: 9 s against
1-2 s for the later autogalaxy pictures, BENCHMARKS.md), and averaging it in
held the next pictures back by half a minute. The budget uses the costs from
the second render on.
"""

from __future__ import annotations

import collections

#: How many of the last renders' costs the budget averages.
RECENT_RENDERS = 3


class RenderPace:
    """Render times and the gate they imply. Not thread-safe: the worker holds its lock."""

    def __init__(self, min_interval: float = 0.0, budget: float = 1.0) -> None:
        self.min_interval = float(min_interval)
        self.budget = float(budget)
        self.first_start: float | None = None  # of the second render: the steady state
        self.last_start = float("-inf")
        self.last_end = float("-inf")
        self.total = 0.0  # seconds spent rendering, from the second render on
        self.renders = 0
        self._last_cost = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_RENDERS)

    def started(self, when: float) -> None:
        self.last_start = when
        if self.first_start is None and self.renders >= 1:
            self.first_start = when

    def finished(self, started: float, ended: float,
                 child_times: tuple[float, float] | None = None) -> None:
        """One render done; ``child_times`` is a render process's (CPU, wall)
        seconds for it, when it drew there."""
        self.last_end = ended
        self.renders += 1
        cost = ended - started
        if child_times is not None:
            cpu, wall = child_times
            cost = max(0.0, cost - wall) + cpu
        self._last_cost = cost
        if self.renders > 1:  # the first one paid the set-up
            self.total += cost
            self._recent.append(cost)

    def next_start(self) -> float:
        start = self.last_start + self.min_interval
        if self.budget < 1 and self._recent:
            cost = sum(self._recent) / len(self._recent)
            start = max(start, self.last_end, self.last_start + cost / self.budget)
        return start

    def share(self) -> float:
        """Rendering's core time as a share of wall time over the complete cycles of the steady
        state (each render and the wait after it, from the second render's start
        to the last start; the first render's set-up is not what the budget limits)."""
        first, last = self.first_start, self.last_start
        if first is None or not last > first or self.renders < 2:
            return 0.0
        # the last render, once finished, has no wait after it yet
        finished_last = self.last_end >= last
        return (self.total - (self._last_cost if finished_last else 0.0)) / (last - first)
