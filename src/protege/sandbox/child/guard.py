"""The Python layer: a program may import only allow-listed standard modules, sees only their public non-module
attributes, gets builtins without open/eval/exec/compile/input, and may not touch `_`-prefixed attributes.

This is the second wall, not the first: CPython cannot be sandboxed from inside (there are known escapes through
introspection), so the kernel layers in confine.py are what holds. The guard turns the ordinary mistakes and the
plain attacks into clear errors before they reach the kernel.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import operator
import sys
import types

# Pure, deterministic standard modules a text/record-processing function needs; nothing that reaches files,
# processes, the network, the clock or randomness.
ALLOWED_IMPORTS = frozenset(
    {
        "re",
        "json",
        "math",
        "cmath",
        "decimal",
        "fractions",
        "numbers",
        "statistics",
        "string",
        "textwrap",
        "unicodedata",
        "difflib",
        "html",
        "urllib.parse",
        "ipaddress",
        "base64",
        "binascii",
        "hashlib",
        "struct",
        "collections",
        "collections.abc",
        "itertools",
        "functools",
        "operator",
        "heapq",
        "bisect",
        "copy",
        "dataclasses",
        "enum",
        "typing",
        "datetime",
        "calendar",
        "csv",
        "keyword",
        "pprint",
    }
)
_REMOVED_BUILTINS = (
    "open",
    "eval",
    "exec",
    "compile",
    "input",
    "breakpoint",
    "globals",
    "locals",
    "vars",
    "help",
    "exit",
    "quit",
    "memoryview",
    "__import__",
    "__build_class__",
    "__loader__",
    "__spec__",
)


class GuardError(Exception):
    """The program breaks the guard's rules (a forbidden import, name or attribute)."""


def check_source(source: str, allowed: frozenset[str]) -> ast.Module:
    """Parse the program and refuse forbidden imports and `_`-prefixed attributes/dunder names, naming the line."""
    tree = ast.parse(source, filename="<program>")
    for node in ast.walk(tree):
        problem = _problem(node, allowed)
        if problem:
            raise GuardError(f"line {getattr(node, 'lineno', '?')}: {problem}")
    return tree


def _problem(node: ast.AST, allowed: frozenset[str]) -> str | None:
    if isinstance(node, ast.Import):
        bad = [a.name for a in node.names if a.name not in allowed]
        return f"import of {bad[0]!r} is not allowed (allowed: the pure standard modules)" if bad else None
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module not in allowed:
            return f"import from {node.module!r} is not allowed"
        bad = [a.name for a in node.names if a.name.startswith("_") or a.name == "*"]
        return f"importing {bad[0]!r} is not allowed" if bad else None
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        return f"attribute {node.attr!r} is not allowed (no '_' attributes)"
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        return f"name {node.id!r} is not allowed"
    return None


class ModuleView(types.ModuleType):
    """A read-only module: a program cannot patch what the next program imports."""

    def __setattr__(self, name, value):
        raise AttributeError(f"module {self.__name__!r} is read-only in a sandboxed program")

    def __delattr__(self, name):
        raise AttributeError(f"module {self.__name__!r} is read-only in a sandboxed program")


class Guard:
    """Builds the restricted globals a program runs in; module views are made once and reused."""

    def __init__(self, allowed: frozenset[str]):
        self.allowed = allowed
        self._views: dict[str, types.ModuleType] = {}
        self.builtins = self._builtins()

    def preload(self) -> None:
        """Import every allowed module now, before the kernel layers deny reading their files."""
        for name in sorted(self.allowed):
            importlib.import_module(name)
        for name in sorted(self.allowed):
            self.view(name)
        import _strptime  # noqa: F401  (datetime.strptime imports it lazily)

    def shared(self) -> list[tuple[str, dict]]:
        """The dicts every program's globals reach (its builtins, the module views), by name."""
        views = [(f"the view of module {name}", vars(view)) for name, view in sorted(self._views.items())]
        return [("the programs' builtins", self.builtins), *views]

    def globals(self) -> dict:
        return {"__builtins__": self.builtins, "__name__": "program"}

    def view(self, name: str) -> types.ModuleType:
        """A module holding the public, non-module attributes of `name` (allowed submodules as their views)."""
        if name not in self._views:
            real = importlib.import_module(name)
            public = {}
            for attr, value in vars(real).items():
                if attr.startswith("_"):
                    continue
                if isinstance(value, types.ModuleType):
                    if value.__name__ in self.allowed and value.__name__.startswith(name + "."):
                        public[attr] = self.view(value.__name__)
                    continue
                public[attr] = value
            view = ModuleView(name)
            view.__dict__.update(_safer(name, public))
            self._views[name] = view
        return self._views[name]

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):  # builtins' signature
        if not level and name not in self.allowed and name in sys.modules:
            # the runtime's own imports (datetime.strptime -> _strptime, strftime -> time): a program cannot
            # name a module that is not allowed (the AST check) nor reach __import__, so only C code gets here
            return sys.modules[name]
        if level or name not in self.allowed:
            raise ImportError(f"import of {name!r} is not allowed in a sandboxed program")
        if fromlist:
            return self.view(name)
        top, _, rest = name.partition(".")
        if top in self.allowed:
            return self.view(top)
        holder = ModuleView(top)  # `import urllib.parse` binds `urllib`: give it only the allowed child
        holder.__dict__[rest] = self.view(name)
        return holder

    def _builtins(self) -> dict:
        safe = {k: v for k, v in vars(builtins).items() if k not in _REMOVED_BUILTINS}
        safe["__import__"] = self._import
        safe["__build_class__"] = builtins.__build_class__  # class statements need it
        safe["getattr"] = _no_private(getattr)
        safe["setattr"] = _no_private(setattr)
        safe["delattr"] = _no_private(delattr)
        safe["hasattr"] = _no_private(hasattr)
        return safe


# Public names that reach `_` attributes or eval for the program: hidden, or checked like getattr.
_HIDDEN = {
    "string": ("Formatter",),  # get_field("0.__globals__", ...) returns the object (super() passes any override)
    "typing": ("get_type_hints",),  # evaluates string annotations with the real builtins
}


def _safer(module: str, public: dict) -> dict:
    public = {k: v for k, v in public.items() if k not in _HIDDEN.get(module, ())}
    if module == "operator":
        public["attrgetter"], public["methodcaller"] = _attrgetter, _methodcaller
    return public


def _attrgetter(*names):
    for name in names:
        if isinstance(name, str) and any(part.startswith("_") for part in name.split(".")):
            raise AttributeError(f"attribute {name!r} is not allowed in a sandboxed program")
    return operator.attrgetter(*names)


def _methodcaller(name, /, *args, **kwargs):
    if isinstance(name, str) and name.startswith("_"):
        raise AttributeError(f"method {name!r} is not allowed in a sandboxed program")
    return operator.methodcaller(name, *args, **kwargs)


def _no_private(fn):
    def checked(obj, name, *rest):
        if isinstance(name, str) and name.startswith("_"):
            raise AttributeError(f"attribute {name!r} is not allowed in a sandboxed program")
        return fn(obj, name, *rest)

    checked.__name__ = fn.__name__
    return checked
