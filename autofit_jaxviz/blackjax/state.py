"""The state a live BlackJAX algorithm carries: the algorithm's own, a tracker beside it."""

from __future__ import annotations

from typing import Any, NamedTuple

from autofit_jaxviz.device.tracker import TrackerState


class LiveState(NamedTuple):
    """The algorithm's state, the tracker, and whether sampling has begun."""

    inner: Any
    tracker: TrackerState
    sampling: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _inner_of(state: Any, who: str = "live_algorithm kernel") -> Any:
    if not isinstance(state, LiveState):
        raise TypeError(
            f"a {who} needs the state its own init built (a LiveState), got "
            f"{type(state).__name__}; build the state with the live algorithm's init")
    return state.inner
