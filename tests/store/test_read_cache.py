"""ReadCache: a value is reused within its TTL, read again after it, and forgotten on invalidate."""

from __future__ import annotations

from protege.store.read_cache import ReadCache


def test_reused_within_the_ttl_and_read_again_after_it():
    reads = []

    def load():
        reads.append(1)
        return len(reads)

    cache: ReadCache[str, int] = ReadCache(ttl_s=60)
    assert cache.get("a", load) == 1 and cache.get("a", load) == 1
    stale: ReadCache[str, int] = ReadCache(ttl_s=0)
    assert stale.get("a", load) == 2 and stale.get("a", load) == 3


def test_invalidate_forgets_all_or_the_refused_keys():
    cache: ReadCache[tuple[str, str], str] = ReadCache(ttl_s=60)
    for key in [("student", "a"), ("skill", "a"), ("student", "b")]:
        cache.get(key, lambda k=key: "old " + k[1])
    cache.invalidate(lambda key: key[1] != "a")
    assert cache.get(("student", "a"), lambda: "new") == "new"
    assert cache.get(("student", "b"), lambda: "new") == "old b"
    cache.invalidate()
    assert cache.get(("student", "b"), lambda: "new") == "new"
