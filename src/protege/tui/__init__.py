"""The review console (Textual). `make_app()` builds it; `python -m protege.tui --db URL` runs it.

Textual is imported only when the console is used, so `import protege` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_app"]


def __getattr__(name: str) -> Any:
    if name == "make_app":
        from protege.tui.app import make_app

        return make_app
    raise AttributeError(f"module 'protege.tui' has no attribute {name!r}")
