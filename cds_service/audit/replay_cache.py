"""JWT replay protection shared by every worker and instance using the same database.

``MemoryReplayCache`` is per process: with four workers a captured token could be replayed once against
each. ``DatabaseReplayCache`` stores each accepted ``(iss, jti)`` (as a SHA-256, so the table holds no
client-chosen strings of arbitrary length) with the token's expiry; the primary key makes "first time
seen" an atomic insert across processes. An entry whose token has expired is reused rather than refused,
as the memory cache forgets it; expired rows are deleted about once a minute.

Trade-off when the database is unavailable: the check falls back to this process's memory cache (which
always records the jti too), so a replay against the same worker is still refused but one against another
worker or instance is not detected until the database is back. The alternative, refusing every EHR call
while the database is down, would turn an audit-store outage into a clinical outage. Each fallback is
counted (``fallbacks``) and logged as an error (at most once a minute).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.database import Database, describe_error
from cds_service.audit.tables import jwt_replay
from cds_service.audit.throttle import ThrottledLog
from cds_service.security import MemoryReplayCache

logger = logging.getLogger(__name__)

CLEANUP_INTERVAL_SECONDS = 60.0


class DatabaseReplayCache:
    """``ReplayCache`` on the ``jwt_replay`` table, with the memory cache as fallback."""

    def __init__(
        self,
        database: Database,
        *,
        fallback: MemoryReplayCache | None = None,
        retry_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._memory = fallback or MemoryReplayCache(clock=clock)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until = 0.0
        self._next_cleanup = 0.0
        self._errors = ThrottledLog(logger, clock)
        self.fallbacks = 0

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        if await self._memory.check_and_store(iss, jti, expires_at):
            return True  # seen by this process: no need to ask the database
        now = self._clock()
        if now < self._down_until:
            self.fallbacks += 1
            return False
        try:
            seen = await self._database.run(self._insert, _key(iss, jti), expires_at, now)
        except SQLAlchemyError as exc:
            self._down_until = now + self._retry_seconds
            self.fallbacks += 1
            self._errors.error(
                "database",
                "jti replay check: database unavailable (%s); using this process's memory only, so "
                "replays against other workers go undetected until it is back (fallbacks=%d)",
                describe_error(exc),
                self.fallbacks,
            )
            return False
        return seen

    def _insert(self, key: str, expires_at: float, now: float) -> bool:
        """True when the key is already stored and unexpired (a replay)."""
        with self._database.engine.begin() as conn:
            if now >= self._next_cleanup:
                self._next_cleanup = now + CLEANUP_INTERVAL_SECONDS
                conn.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now))
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            statement = (
                dialect.insert(jwt_replay)
                .values(key=key, expires_at=float(expires_at))
                .on_conflict_do_update(
                    index_elements=[jwt_replay.c.key],
                    set_={"expires_at": float(expires_at)},
                    where=jwt_replay.c.expires_at < float(now),
                )
                .returning(jwt_replay.c.key)
            )
            stored = conn.execute(statement).first()
        return stored is None  # neither inserted nor an expired entry replaced: seen before


def _key(iss: str, jti: str) -> str:
    return hashlib.sha256(iss.encode() + b"\x00" + jti.encode()).hexdigest()
