"""JAX arrays turned into NumPy, on the worker, for visualizers that do not take JAX.

:func:`to_host` runs on the worker (never on the sampler thread) and replaces
every JAX array, however deep (model instances, lists, tuples, namedtuples,
dicts, dataclasses including frozen/slots ones, registered pytrees), with a
NumPy array. It never mutates its input. (Payloads reach the worker already
on the host: the in-jit hook's sink copies the packed array, the PyAutoFit
integration hands on a NumPy vector; so no asynchronous device-to-host copy is
started on the sampler side.) JAX is never imported here: if the sampler
never imported it there can be no JAX arrays, and the NumPy path stays free of
the import (and of its start-up cost).

Objects are copied with :func:`copy.copy` and their state (``__dict__`` and
``__slots__``) is then walked and replaced, which keeps every attribute,
private ones included. A registered pytree's own flatten/unflatten is used
only for objects that cannot be copied that way, because unflatten may re-run
``__init__`` and drop attributes (autofit's instance pytrees do both).
"""

from __future__ import annotations

import copy
import enum
import functools
import logging
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Values that are immutable and hold no arrays: returned as they are.
_ATOMS: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    frozenset,
    type,
    type(Ellipsis),
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    functools.partial,
    np.generic,
    np.dtype,
    enum.Enum,
)

_warned_types: set[type] = set()
_warned_lock = threading.Lock()

# A path to the current node, for messages only: (parent path, key) pairs.
_Path = tuple[Any, ...] | None


class _Attr(str):
    """An attribute name in a path (shown as ``.name``, items as ``[key]``)."""

    __slots__ = ()


def _format_path(path: _Path) -> str:
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = "payload"
    for key in reversed(keys):
        text += f".{key}" if isinstance(key, _Attr) else f"[{key!r}]"
    return text


@functools.cache
def _slot_names(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for name in slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"  # private-name mangling
            if name not in names:
                names.append(name)
    return tuple(names)


def _jax() -> Any | None:
    """The ``jax`` module if the program already imported it, else ``None`` (never imports)."""
    jax = sys.modules.get("jax")
    return jax if getattr(jax, "Array", None) is not None else None


class _Walker:
    """One deep copy of one payload; ``memo`` keeps shared references shared and ends cycles."""

    def __init__(self, jax: Any | None, on_jax: Callable[[Any, _Path], Any]) -> None:
        self.jax = jax
        self.jax_array: type | None = jax.Array if jax is not None else None
        self.on_jax = on_jax
        self.memo: dict[int, tuple[Any, Any]] = {}  # id -> (original kept alive, copy)

    def __call__(self, obj: Any, path: _Path = None) -> Any:
        if isinstance(obj, _ATOMS):
            return obj
        hit = self.memo.get(id(obj))
        if hit is not None:
            return hit[1]
        if self.jax_array is not None and isinstance(obj, self.jax_array):
            return self._remember(obj, self.on_jax(obj, path))
        if isinstance(obj, np.ndarray):
            return self._array(obj, path)
        if isinstance(obj, tuple):
            return self._tuple(obj, path)
        if type(obj) is list:
            new_list: list[Any] = self._remember(obj, [])
            new_list.extend(self(v, (path, i)) for i, v in enumerate(obj))
            return new_list
        if type(obj) is dict:
            new_dict: dict[Any, Any] = self._remember(obj, {})
            for k, v in obj.items():
                new_dict[k] = self(v, (path, k))
            return new_dict
        if type(obj) is set:
            return self._remember(obj, set(obj))  # elements are hashable, so immutable
        return self._object(obj, path)

    def _remember[T](self, obj: Any, new: T) -> T:
        self.memo[id(obj)] = (obj, new)
        return new

    def _array(self, obj: np.ndarray, path: _Path) -> np.ndarray:
        if obj.dtype != object:
            return self._remember(obj, obj)
        new = self._remember(obj, obj.copy())
        for index in np.ndindex(obj.shape):
            new[index] = self(obj[index], (path, index))
        return new

    def _tuple(self, obj: tuple, path: _Path) -> Any:
        items = [self(v, (path, i)) for i, v in enumerate(obj)]
        hit = self.memo.get(id(obj))  # reached again through a cycle while walking items
        if hit is not None:
            return hit[1]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return self._remember(obj, obj)  # immutable, and so is everything in it
        cls = type(obj)
        if cls is tuple:
            return self._remember(obj, tuple(items))
        try:
            if hasattr(cls, "_fields"):  # namedtuple
                return self._remember(obj, cls._make(items))  # type: ignore[attr-defined]
            return self._remember(obj, cls(items))
        except Exception as error:
            return self._uncopyable(obj, path, error)

    def _object(self, obj: Any, path: _Path) -> Any:
        try:
            new = copy.copy(obj)
        except Exception as error:
            return self._uncopyable(obj, path, error)
        if new is obj:
            # The class says its instances are immutable (Decimal, ...): trust it,
            # unless it is a pytree node that may hold JAX arrays.
            via_tree = self._via_pytree(obj, path)
            return via_tree if via_tree is not None else self._remember(obj, obj)
        self._remember(obj, new)
        if isinstance(obj, list):
            list.__setitem__(new, slice(None), [self(v, (path, i)) for i, v in enumerate(obj)])
        elif isinstance(obj, dict):
            items = [(k, self(v, (path, k))) for k, v in obj.items()]
            new.clear()
            new.update(items)
        self._copy_state(new, path)
        return new

    def _copy_state(self, new: Any, path: _Path) -> None:
        """Replace the (shallow-copied) attributes of ``new`` with walked copies."""
        try:
            state = vars(new)
        except TypeError:
            state = None
        if isinstance(state, dict):
            for key, value in list(state.items()):
                walked = self(value, (path, _Attr(key) if isinstance(key, str) else key))
                if walked is not value:
                    state[key] = walked  # direct: bypasses frozen/asserting __setattr__
        for name in _slot_names(type(new)):
            try:
                value = object.__getattribute__(new, name)
            except AttributeError:
                continue  # an unset slot
            walked = self(value, (path, _Attr(name)))
            if walked is not value:
                object.__setattr__(new, name, walked)

    def _via_pytree(self, obj: Any, path: _Path) -> Any | None:
        """Rebuild ``obj`` through its registered pytree flatten/unflatten, if it has one."""
        if self.jax is None:
            return None
        tree_util = self.jax.tree_util
        try:
            children, treedef = tree_util.tree_flatten(obj, is_leaf=lambda x: x is not obj)
        except Exception:
            return None
        if tree_util.treedef_is_leaf(treedef):
            return None
        walked = [self(child, (path, i)) for i, child in enumerate(children)]
        return self._remember(obj, tree_util.tree_unflatten(treedef, walked))

    def _uncopyable(self, obj: Any, path: _Path, error: Exception) -> Any:
        via_tree = self._via_pytree(obj, path)
        if via_tree is not None:
            return via_tree
        cls = type(obj)
        with _warned_lock:
            first = cls not in _warned_types
            _warned_types.add(cls)
        if first:
            logger.warning(
                "autofit_jaxviz cannot copy %s at %s (%s: %s); the renderer will see the "
                "sampler's own object, and any JAX arrays inside it stay JAX arrays",
                cls.__qualname__,
                _format_path(path),
                type(error).__name__,
                error,
            )
        return self._remember(obj, obj)


def _to_numpy(jax: Any) -> Callable[[Any, _Path], Any]:
    def convert(array: Any, path: _Path) -> Any:
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.extended):  # e.g. PRNG keys
            array = jax.random.key_data(array)
        # An owned, writable copy: never a view of a buffer XLA may donate or reuse.
        host = np.array(array)
        return host[()] if host.ndim == 0 else host

    return convert


def to_host[T](payload: T) -> T:
    """Return ``payload`` with every JAX array, at any depth, replaced by NumPy.

    Meant for the worker thread. 0-d arrays become NumPy scalars. The input is
    never mutated; NumPy arrays and other leaves are shared with it. Without
    JAX loaded there is nothing to convert and ``payload`` is returned
    unchanged.
    """
    jax = _jax()
    if jax is None:
        return payload
    return _Walker(jax, _to_numpy(jax))(payload)


def contains_jax(payload: Any) -> bool:
    """Whether any JAX array is left anywhere in ``payload`` (for checks and tests)."""
    jax = _jax()
    if jax is None:
        return False
    found = False

    def note(array: Any, path: _Path) -> Any:
        nonlocal found
        found = True
        return array

    _Walker(jax, note)(payload)
    return found


__all__ = ["contains_jax", "to_host"]
