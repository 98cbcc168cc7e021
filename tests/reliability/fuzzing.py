"""Fuzz tests at two depths: a quick run in the default suite, and the same test with many more examples under the
`soak` marker (`make soak`), so the default run stays short without the deep run being lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

BASE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def fuzz(*, quick: int, soak: int, **strategies: Any) -> Callable[[Callable[..., Any]], Any]:
    """`@given(**strategies)` with `quick` examples; the returned test's `.soak` is the same test with `soak`
    examples, marked soak: expose it as a module-level `test_..._soak` for pytest to collect."""

    def wrap(body: Callable[..., Any]) -> Any:
        test = settings(BASE, max_examples=quick)(given(**strategies)(body))
        test.soak = pytest.mark.soak(settings(BASE, max_examples=soak)(given(**strategies)(body)))
        return test

    return wrap
