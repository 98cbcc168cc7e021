"""Sandboxes shared by a module's tests (a worker start is ~0.15 s; restarts after hostile calls happen anyway).

- `guarded`: the default Sandbox (kernel layers + import guard).
- `serves(sandbox)`: whether it still answers a correct program right.
- `bare`: Sandbox(guard=False): the kernel layers alone, so a hostile program can import os, socket and ctypes
  and the test shows what the kernel stops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protege.sandbox import Sandbox

CORRECT = "import re\n\ndef solve(text):\n    return {'numbers': [int(n) for n in re.findall(r'\\d+', text)]}\n"


@pytest.fixture(scope="module")
def guarded() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox.start()


@pytest.fixture(scope="module")
def bare() -> Iterator[Sandbox]:
    with Sandbox(guard=False) as sandbox:
        yield sandbox.start()


@pytest.fixture
def serves():
    """serves(sandbox): it still answers a correct program right (after whatever the test did to it)."""

    def check(sandbox: Sandbox) -> bool:
        result = sandbox.run(CORRECT, "solve", {"text": "order 12 of 3"}, timeout_s=5)
        return result.ok and result.value == {"numbers": [12, 3]}

    return check
