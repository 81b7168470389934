"""Error logs that repeat at most once a minute per kind.

A database or a spool that is down fails on every call; one line a minute says so without flooding
the log (and the disk) at hook rate. The counters on ``/metrics`` keep the exact numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

#: Repeated errors of one kind are logged at most this often.
ERROR_LOG_INTERVAL_SECONDS = 60.0


class ThrottledLog:
    """``error(kind, ...)`` logs when that kind was last logged ``interval`` seconds ago or never."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        interval: float = ERROR_LOG_INTERVAL_SECONDS,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}

    def error(self, kind: str, message: str, *args: object, force: bool = False) -> None:
        """Log unless ``kind`` was logged less than ``interval`` ago; ``force`` logs (and restarts the
        interval) regardless, for the first failure after a recovery."""
        now = self._clock()
        last = self._last.get(kind)
        if force or last is None or now - last >= self._interval:
            self._last[kind] = now
            self._logger.error(message, *args)
