"""Replay protection: remember each accepted token's ``jti`` until the token expires.

CDS Hooks makes ``jti`` a nonce so that a captured token cannot be sent again. A token only needs to be
remembered until it expires (plus clock leeway); the authenticator refuses tokens living longer than
``jwt_max_lifetime_seconds``, which bounds how long entries stay. Only tokens whose signature and claims
already verified are recorded, so outsiders cannot fill the cache.

``MemoryReplayCache`` is per process: with several workers a token could be replayed once against each
worker. A shared implementation (database, Redis) can be dropped in through the ``ReplayCache`` protocol.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class ReplayCache(Protocol):
    """Storage of seen ``(iss, jti)`` pairs."""

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record jti; return True if it was already seen (a replay)."""
        ...


class MemoryReplayCache:
    """In-memory ``ReplayCache``: a dict plus a heap ordered by expiry, bounded to ``max_entries``.

    Entries are forgotten once ``clock()`` passes their ``expires_at`` (the caller adds the leeway). When
    full, the entry closest to expiry is evicted (logged): refusing valid tokens instead would let a burst
    of traffic lock every client out. ``check_and_store`` never awaits, so it is atomic on one event loop;
    the lock also makes it safe if called from several threads.
    """

    def __init__(self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._expiry_by_key: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry_by_key)

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        key = (iss, jti)
        with self._lock:
            self._forget_expired(self._clock())
            if key in self._expiry_by_key:
                return True
            if len(self._expiry_by_key) >= self._max_entries:
                self._evict_soonest()
            self._expiry_by_key[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return False

    def _forget_expired(self, now: float) -> None:
        # Each dict entry has one heap item and entries only leave through the heap: the two stay in step.
        while self._heap and self._heap[0][0] < now:
            _, key = heapq.heappop(self._heap)
            del self._expiry_by_key[key]

    def _evict_soonest(self) -> None:
        _, (iss, jti) = heapq.heappop(self._heap)
        del self._expiry_by_key[(iss, jti)]
        logger.warning(
            "replay cache full (%d entries): evicted iss=%r jti=%r early", self._max_entries, iss, jti
        )
