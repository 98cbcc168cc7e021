"""Store reads reused for a couple of seconds: a call's routing asks for its task's student, skill and programs
without a query each time, and what another process changes in the store shows within `TTL_S`."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

TTL_S = 2.0
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """`get(key, load)`: the value `load()` gave for `key` less than `ttl_s` ago, else a fresh one."""

    def __init__(self, ttl_s: float = TTL_S):
        self.ttl_s = ttl_s
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K, load: Callable[[], V]) -> V:
        hit, now = self._items.get(key), time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = load()
        self._items[key] = (now, value)
        return value

    def invalidate(self, keep: Callable[[K], bool] | None = None) -> None:
        """Forget every value, or those whose key `keep` refuses."""
        self._items = {k: v for k, v in self._items.items() if keep is not None and keep(k)}
