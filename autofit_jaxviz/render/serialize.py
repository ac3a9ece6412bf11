"""A render, serialized once and by value, to cross to a render process.

``cloudpickle`` pickles the classes and functions of ``__main__`` (a notebook,
a workspace script without a main guard) by value, so a render process never
imports the user's main module and never runs a script a second time. Arrays
travel out of band (pickle protocol 5): the serialized form points at the
arrays' own memory instead of copying them, so an analysis holding a large
dataset costs no copy in the fit's process, and a render process started
again after a crash is sent the same serialized form.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle


class Unsendable(Exception):
    """The render cannot be serialized; ``part`` names the attribute that stops it."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part


@dataclass(frozen=True)
class SerializedRender:
    """The pickle stream (``head``) and the out-of-band array buffers it refers to."""

    head: bytes
    buffers: tuple[memoryview, ...]

    @property
    def nbytes(self) -> int:
        return len(self.head) + sum(b.nbytes for b in self.buffers)


def serialize(obj: Any) -> SerializedRender:
    """Serialize ``obj`` by value; raise :class:`Unsendable` naming what stops it."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        views = tuple(buffer.raw() for buffer in buffers)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot be sent"
        raise Unsendable(unpicklable_part(obj) or f"{type(error).__name__}: {error}") \
            from error
    return SerializedRender(head, views)


def deserialize(head: bytes, buffers: list[bytearray]) -> Any:
    """The object :func:`serialize` was given (writable arrays: ``buffers`` are)."""
    return pickle.loads(head, buffers=buffers)  # noqa: S301 - our own parent's bytes


def _dumps_without_arrays(obj: Any) -> None:
    # arrays out of band and dropped: checking an attribute copies no data
    cloudpickle.dumps(obj, protocol=5, buffer_callback=lambda _buffer: None)


def unpicklable_part(obj: Any, depth: int = 3) -> str | None:
    """Name the attribute that stops ``obj`` from serializing (``None`` if it does).

    So that the fallback to a thread can say *which* part of an analysis
    cannot cross (``.data_file (TextIOWrapper ...)``), not only that something
    could not.
    """
    try:
        _dumps_without_arrays(obj)
        return None
    except Exception as error:  # noqa: BLE001
        reason = f"{type(error).__name__}: {error}"
    if depth > 0:
        children: list[tuple[str, Any]] = []
        if hasattr(obj, "__dict__"):
            children += [(f".{k}", v) for k, v in vars(obj).items()]
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            children += [(f"<closure {n}>", c.cell_contents)
                         for n, c in zip(code.co_freevars, closure, strict=False)]
        if isinstance(obj, dict):
            children += [(f"[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, list | tuple):
            children += [(f"[{i}]", v) for i, v in enumerate(obj)]
        for name, child in children:
            inner = unpicklable_part(child, depth - 1)
            if inner is not None:
                return name + (inner if inner.startswith((".", "[", "<")) else f" ({inner})")
    return f"{type(obj).__name__} ({reason})"
