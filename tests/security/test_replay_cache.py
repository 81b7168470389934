"""MemoryReplayCache: a jti is a replay until its token expires; the cache stays bounded."""

from __future__ import annotations

import pytest

from cds_service.security import MemoryReplayCache, ReplayCache

from .helpers import T0, FrozenClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def cache(clock: FrozenClock) -> MemoryReplayCache:
    return MemoryReplayCache(clock=clock)


def test_memory_cache_is_a_replay_cache(cache: MemoryReplayCache) -> None:
    protocol_typed: ReplayCache = cache
    assert protocol_typed is cache


async def test_second_sighting_is_a_replay(cache: MemoryReplayCache) -> None:
    assert await cache.check_and_store("iss-a", "jti-1", T0 + 60) is False
    assert await cache.check_and_store("iss-a", "jti-1", T0 + 60) is True


async def test_jti_is_scoped_by_issuer(cache: MemoryReplayCache) -> None:
    assert await cache.check_and_store("iss-a", "jti-1", T0 + 60) is False
    assert await cache.check_and_store("iss-b", "jti-1", T0 + 60) is False


async def test_entries_are_forgotten_after_they_expire(cache: MemoryReplayCache, clock: FrozenClock) -> None:
    await cache.check_and_store("iss-a", "jti-1", T0 + 60)
    clock.advance(60)
    assert await cache.check_and_store("iss-a", "jti-1", T0 + 120) is True  # still within expires_at
    clock.advance(1)
    assert len(cache) == 1
    assert await cache.check_and_store("iss-a", "jti-2", T0 + 200) is False
    assert len(cache) == 1  # jti-1 was purged


async def test_full_cache_evicts_the_entry_closest_to_expiry(clock: FrozenClock) -> None:
    cache = MemoryReplayCache(max_entries=2, clock=clock)
    await cache.check_and_store("iss", "late", T0 + 300)
    await cache.check_and_store("iss", "soon", T0 + 10)
    await cache.check_and_store("iss", "new", T0 + 100)

    assert len(cache) == 2
    assert await cache.check_and_store("iss", "late", T0 + 300) is True
    assert await cache.check_and_store("iss", "soon", T0 + 10) is False  # evicted: accepted again


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryReplayCache(max_entries=0)
