"""What can be sent to a render process, and how it is kept from running the script again.

A render crosses to the child by pickle. :func:`unpicklable_part` names the
attribute that stops it (so the fallback to a thread can say which), and
``spawn``'s habit of re-importing the parent's main module is kept in check:
a render process never re-runs a script, unless the render needs a class from
``__main__`` and the script's top level only defines things.
"""

from __future__ import annotations

import ast
import io
import multiprocessing.spawn
import pickle
import sys
import threading
import types
from collections.abc import Callable
from typing import Any


def unpicklable_part(obj: Any, depth: int = 3) -> str | None:
    """Name the attribute that stops ``obj`` from pickling (``None`` if it pickles).

    Used to say *which* part of an analysis cannot cross to the render process,
    rather than only that something could not.
    """
    try:
        pickle.dumps(obj)
        return None
    except Exception as error:
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


#: Marks the render processes whose parent's ``__main__`` must not be run again.
WITHOUT_MAIN = " (without __main__)"
_filter_lock = threading.Lock()


def _preparation_filter(original: Callable[[str], dict]) -> Callable[[str], dict]:
    def get_preparation_data(name: str) -> dict:
        data = original(name)
        if name.endswith(WITHOUT_MAIN):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data._autofit_jaxviz = True  # type: ignore[attr-defined]
    return get_preparation_data


def install_preparation_filter() -> None:
    """Let a render process start without re-running the user's script.

    ``spawn`` runs the parent's main module again in every child (as
    ``__mp_main__``) so that classes defined there can be unpickled. A fit
    script without an ``if __name__ == "__main__":`` guard (PyAutoFit's
    workspace scripts have none) would then run its whole fit a second time in
    the render process. Processes whose name carries the marker skip that step;
    every other process is left exactly as multiprocessing makes it.
    """
    with _filter_lock:
        current = multiprocessing.spawn.get_preparation_data
        if not getattr(current, "_autofit_jaxviz", False):
            multiprocessing.spawn.get_preparation_data = _preparation_filter(current)


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


class _MainFinder(pickle.Pickler):
    """Pickles into nothing (no copy of a large analysis is kept), noting the
    first class or function from ``__main__``."""

    def __init__(self) -> None:
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.found: str | None = None

    def reducer_override(self, obj: Any) -> Any:
        if self.found is None:
            if isinstance(obj, type | types.FunctionType):
                owner = obj
            else:
                owner = type(obj)
            if getattr(owner, "__module__", None) == "__main__":
                self.found = getattr(owner, "__qualname__", repr(owner))
        return NotImplemented


def needs_main(obj: Any) -> str | None:
    """The name of a class or function from ``__main__`` that ``obj`` refers to, if any."""
    finder = _MainFinder()
    try:
        finder.dump(obj)
    except Exception:  # unpicklable further on: the spawn reports that itself
        pass
    return finder.found


#: Calls a script may make at its top level and still be safe to import again
#: (setting up paths, warnings, logging, a matplotlib backend, JAX flags).
_SET_UP_MODULES = frozenset({"os", "sys", "warnings", "logging", "matplotlib", "jax"})


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _only_set_up_calls(node: ast.AST) -> bool:
    return all(_root_name(call.func) in _SET_UP_MODULES
               for call in ast.walk(node) if isinstance(call, ast.Call))


def _is_main_guard(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, *test.comparators]
    names = {n.id for n in sides if isinstance(n, ast.Name)}
    values = {n.value for n in sides if isinstance(n, ast.Constant)}
    return names == {"__name__"} and values == {"__main__"}


def _defines_only(node: ast.stmt) -> bool:
    """Imports, definitions, docstrings, plain assignments and set-up calls:
    what is safe to run again when a render process imports the script."""
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef
                  | ast.ClassDef | ast.Pass):
        return True
    if isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign):
        return _only_set_up_calls(node)
    if isinstance(node, ast.If | ast.Try):
        blocks = [node.body, node.orelse]
        if isinstance(node, ast.Try):
            blocks += [node.finalbody, *(h.body for h in node.handlers)]
        return _only_set_up_calls(getattr(node, "test", ast.Pass())) and all(
            _defines_only(inner) for block in blocks for inner in block)
    return False


def source_is_guarded(source: str) -> bool:
    """Whether a script does its work only under ``if __name__ == "__main__":``.

    Conservative: any top-level statement that may do work outside the guard
    (a call other than set-up, a loop, a ``with``) makes it unguarded, because
    importing it in a render process would do that work again.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    guards = [node for node in tree.body if _is_main_guard(node)]
    return bool(guards) and all(_defines_only(node) for node in tree.body
                                if not _is_main_guard(node))


def main_is_guarded() -> bool:
    """:func:`source_is_guarded` for the running main script (``False`` for a notebook)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return source_is_guarded(f.read())
    except OSError:
        return False

