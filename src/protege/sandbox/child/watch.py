"""What one program call could leave behind for the calls after it, in the worker they share.

Fresh globals and read-only module views keep a program's own names to itself, but the objects behind them are
the worker's: a program may set an attribute of a class of an allowed module (`json.JSONEncoder.encode = ...`),
append to a module's list, change decimal's template contexts or csv's dialects, register a class with a
standard ABC — and, past the guard (which is not a boundary), rebind a real module's globals. Any of these would
change every later call's answer, another task's program's included, and the worker's own replies (they are
JSON). `StateWatch` fingerprints that state once, before the first call, by the identity of every value (so no
program object's `__eq__` runs while it compares), and the worker checks it after each call: a change fails that
call and ends the worker, which the app replaces. Each call also starts in a fresh default decimal context (the
current context is per thread, and arithmetic sets its flags).
"""

from __future__ import annotations

import abc
import csv
import decimal
import operator
import sys
import types
from collections.abc import Iterable
from itertools import chain, islice

_CONTAINERS = (list, dict, set, bytearray)
_DIALECTS = ("excel", "excel-tab", "unix")
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: built-in classes nobody can patch


class StateWatch:
    """The fingerprint of the state programs share, and the check of it after a call (~0.2 ms)."""

    def __init__(self, allowed: Iterable[str], namespaces: Iterable[tuple[str, dict]] = ()):
        """`namespaces`: more dicts programs could reach, by name (the guard's builtins and module views)."""
        modules = [sys.modules[name] for name in sorted(set(allowed)) if name in sys.modules]
        classes = _mutable_classes(modules)
        self._labels, self._spaces = zip(
            *namespaces,
            *((f"module {m.__name__}", vars(m)) for m in _modules_to_watch()),
            *((f"class {_name(c)}", c.__dict__) for c in classes),
            *((f"{m.__name__}.{k}", v) for m in modules for k, v in vars(m).items() if _container(k, v)),
            strict=True,
        )
        self._abcs = [c for c in classes if isinstance(c, abc.ABCMeta)]
        self._registered = [_registered(c) for c in self._abcs]
        self._modules = set(sys.modules)
        self._default = decimal.DefaultContext.copy()
        self._before, self._sizes = self._fingerprint(), self._registry_sizes()

    def reset(self) -> None:
        """Before a call: the thread's decimal context back to the default every call starts from."""
        decimal.setcontext(self._default.copy())

    def changed(self) -> str | None:
        """What the last call changed (its name), or None. Compared by identity, in C: no object a program made
        runs any of its methods here."""
        (sizes, keys, values, other), before = self._fingerprint(), self._before
        if sizes != before[0] or not all(map(operator.is_, keys, before[1])):
            return self._which()
        if not all(map(operator.is_, values, before[2])):
            return self._which()
        if other != before[3]:
            return "decimal's template contexts or csv's dialects"
        return self._registrations()

    def _registry_sizes(self) -> tuple[int, ...]:
        return tuple(len(abc._get_dump(c)[0]) for c in self._abcs)  # type: ignore[attr-defined]

    def _fingerprint(self) -> tuple[tuple, list, list, tuple]:
        sizes = tuple(map(len, self._spaces))
        keys = list(chain.from_iterable(map(_members, self._spaces)))
        values = list(chain.from_iterable(map(_values, self._spaces)))
        templates = (decimal.DefaultContext, decimal.BasicContext, decimal.ExtendedContext)
        dialects = tuple(_dialect(name) for name in _DIALECTS)  # the built-in ones; a new one changes the count
        other = (*map(repr, templates), len(csv.list_dialects()), dialects, csv.field_size_limit())
        return sizes, keys, values, other  # other: plain str and int made here, safe to compare with ==

    def _registrations(self) -> str | None:
        """An ABC that learned to claim a class the worker had before the call (`Sequence.register(dict)`), or None.
        A module imported during the call may register its own classes (`array` with MutableSequence): those
        are kept, and the fingerprint takes them in."""
        sizes = self._registry_sizes()
        if sizes == self._sizes:
            return None
        for i, c in enumerate(self._abcs):
            now = _registered(c)
            if any(k.__module__ in self._modules for k in now.values() if id(k) not in self._registered[i]):
                return f"the ABC registry of {_name(c)}"
            self._registered[i] = now
        self._sizes, self._before = sizes, self._fingerprint()
        return None

    def _which(self) -> str:
        """The first namespace that differs from the fingerprint (a slow path: the worker is ending)."""
        before_keys, before_values = iter(self._before[1]), iter(self._before[2])
        for label, space, n in zip(self._labels, self._spaces, self._before[0], strict=True):
            old_keys, old_values = list(islice(before_keys, n)), list(islice(before_values, n))
            if len(space) != n or not all(map(operator.is_, old_keys, _members(space))):
                return label
            if not all(map(operator.is_, old_values, _values(space))):
                return label
        return "the shared state"


def _registered(cls: abc.ABCMeta) -> dict[int, type]:
    """The classes registered with an ABC (virtual subclasses), by id."""
    classes = (ref() for ref in abc._get_dump(cls)[0])  # type: ignore[attr-defined]
    return {id(k): k for k in classes if k is not None}


def _dialect(name: str) -> tuple:
    d = csv.get_dialect(name)
    fields = (d.delimiter, d.quotechar, d.escapechar, d.lineterminator)
    return (*fields, d.doublequote, d.skipinitialspace, d.quoting, d.strict)


def _members(space: object) -> Iterable[object]:
    """A namespace's keys, a list's or set's items, a bytearray's bytes."""
    return list(space)  # type: ignore[call-overload]


def _values(space: object) -> Iterable[object]:
    return list(space.values()) if isinstance(space, dict | types.MappingProxyType) else ()


def _mutable_classes(modules: list[types.ModuleType]) -> list[type]:
    """Every class reachable from the modules' attributes and their classes' attributes that can be patched."""
    seen: dict[int, type] = {}
    stack: list[object] = list(modules)
    while stack:
        for value in list(vars(stack.pop()).values()):
            if isinstance(value, type) and id(value) not in seen:
                seen[id(value)] = value
                stack.append(value)
    return [c for c in seen.values() if not c.__flags__ & _IMMUTABLE_TYPE]


def _modules_to_watch() -> list[types.ModuleType]:
    """The modules the worker's replies go through (json and the worker's own), and builtins. Other modules'
    globals are out of a guarded program's reach (the guard gives views, and no `_` attributes)."""
    names = ("builtins", "json", "json.encoder", "json.decoder", "json.scanner", "protocol", "watch")
    return [sys.modules[name] for name in names if name in sys.modules]


def _container(name: str, value: object) -> bool:
    """A module's public list, dict, set or bytearray (a program sees it through the module's view; the private
    ones, caches among them, change in use)."""
    return not name.startswith("_") and type(value) in _CONTAINERS


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
