"""Render functions for the worker tests that work in both backends.

They are plain module-level classes (a render process imports this module by
name) and record what they drew in a file (so the test can read what the child
process did). Their events are files (:class:`FileEvent`), so they work across
the process boundary as well as between threads.
"""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

from file_event import FileEvent


class Recorder:
    """Appends ``repr(payload)`` to a file per render.

    ``hold_on``: when this payload arrives, set ``started`` and wait for
    ``release`` before drawing it. ``behaviour``: ``"ok"``, ``"raise"``
    (ValueError), ``"not-implemented"``, ``"hang"`` (waits forever),
    ``"exit-on"`` (the process dies with os._exit when ``payload == exit_on``).
    """

    def __init__(self, path: Path, *, hold_on: object = None, behaviour: str = "ok",
                 exit_on: object = None) -> None:
        self.path = str(path)
        self.hold_on = hold_on
        self.behaviour = behaviour
        self.exit_on = exit_on
        self.creator = os.getpid()
        self.started = FileEvent(near=path)
        self.release = FileEvent(near=path)

    def __call__(self, payload: object) -> str:
        key = getattr(payload, "i", payload)
        if self.behaviour == "raise":
            raise ValueError(f"bad payload {key}")
        if self.behaviour == "not-implemented":
            self._write(key)
            raise NotImplementedError
        if self.behaviour == "hang":
            self.started.set()
            if os.getpid() == self.creator:
                self.release.wait()  # a thread: freed by the test's teardown
            else:
                # a render process, which shutdown terminates: never wait on a
                # shared Condition here, a process killed inside its wait breaks it
                threading.Event().wait()
        if self.exit_on is not None and key == self.exit_on:
            os._exit(7)
        if self.hold_on is not None and key == self.hold_on:
            self.started.set()
            if not self.release.wait(60):
                raise RuntimeError("test never released the gate")
        self._write(key)
        return f"rendered {key!r} in {os.getpid()}"

    def _write(self, key: object) -> None:
        with open(self.path, "a") as f:
            f.write(repr(key) + "\n")

    def rendered(self) -> list:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [ast.literal_eval(line) for line in f.read().splitlines()]


class Payload:
    """A payload that can be weak-referenced and pickled."""

    __slots__ = ("i", "__weakref__")

    def __init__(self, i: int) -> None:
        self.i = i

    def __getstate__(self):
        return self.i

    def __setstate__(self, state):
        self.i = state


def matplotlib_backend(payload: object) -> str:
    """Draw a figure with pyplot and say which backend drew it."""
    import matplotlib
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.canvas.draw()
    plt.close(figure)
    return f"{matplotlib.get_backend()} {os.environ.get('MPLBACKEND')}"


class WarmingRecorder(Recorder):
    """A Recorder with the optional ``warm_up`` hook a render process calls first."""

    def __init__(self, path: Path, *, warm_up_fails: bool = False) -> None:
        super().__init__(path)
        self.warm_up_fails = warm_up_fails

    def warm_up(self) -> None:
        self._write(f"warm-up in {os.getpid()}")
        if self.warm_up_fails:
            raise RuntimeError("warm-up failed")


class SlowToLoad(Recorder):
    """A Recorder whose unpickling in the render process waits for ``release``
    (after setting ``loading``): a render process that is still starting."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loading = FileEvent(near=path)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if os.getpid() != self.creator:
            self.loading.set()
            self.release.wait(60)


def jax_settings(_payload: object) -> tuple[str, str, str]:
    """What JAX computes with in the process that renders: precision and platform."""
    import jax
    import jax.numpy as jnp

    return str(jnp.zeros(()).dtype), str(jax.config.jax_platforms), jax.default_backend()


class CoreTime:
    """A render that keeps a core busy for ``cpu`` seconds of CPU time, then waits
    ``idle`` seconds without one, as a niced render process does on a busy machine."""

    def __init__(self, cpu: float = 0.0, idle: float = 0.0) -> None:
        self.cpu, self.idle = cpu, idle

    def __call__(self, payload: object) -> object:
        end = time.process_time() + self.cpu
        while time.process_time() < end:
            pass
        if self.idle:
            time.sleep(self.idle)  # the simulated render's cost: no core taken
        return payload
