"""The audit spool: records kept on disk while the store is down, replayed when it is back or after a restart.

Each process appends to its own file, ``<data_dir>/audit-spool/<random>.jsonl`` (one JSON record per line,
fsynced after each append), and holds an exclusive ``flock`` on it while it lives. A file whose lock can
be taken belongs to no living process (a previous run, a crashed worker): any process adopts it, replays
it and deletes it. Several workers sharing a data directory therefore never write the same file, and a
backlog outlives a restart.

Replay is at-least-once: a file is deleted (or truncated, for the process's own file) only after all its
records were written, and the store ignores a record whose id it already has. A line that cannot be read
(a torn write when the machine lost power) is counted as lost and logged, never silently skipped.

All methods block (file I/O, fsync): the writer calls them on a worker thread. A lock makes them safe to
call from several threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from cds_service.audit.records import InvocationRecord

logger = logging.getLogger(__name__)


class SpoolFull(Exception):
    """Appending would pass the configured size limit."""


class SpoolUnavailable(Exception):
    """The spool directory cannot be written (read-only or missing volume)."""


@dataclass
class ReplayResult:
    written: int = 0
    lost: int = 0


class Spool:
    """This process's spool file plus adoption of orphaned ones."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._fd: int | None = None
        self._size = 0
        self._records = 0

    # -- own file --------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create this process's file and lock it. Raises SpoolUnavailable when the directory is unusable."""
        with self._lock:
            if self._fd is not None:
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"{uuid.uuid4().hex}.jsonl"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise SpoolUnavailable(f"{self.directory}: {exc.strerror or exc}") from exc
            self._path, self._fd, self._size, self._records = path, fd, 0, 0

    @property
    def path(self) -> Path | None:
        return self._path

    def append(self, records: Sequence[InvocationRecord]) -> None:
        """Append and fsync. Raises SpoolFull or SpoolUnavailable; nothing is written in that case."""
        if not records:
            return
        data = b"".join(r.model_dump_json().encode() + b"\n" for r in records)
        with self._lock:
            if self._fd is None:
                raise SpoolUnavailable("spool is not open")
            if self._size + len(data) > self.max_bytes:
                raise SpoolFull(f"spool would exceed {self.max_bytes} bytes")
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                # A partial write leaves a torn last line; replay counts it as lost.
                raise SpoolUnavailable(f"{self._path}: {exc.strerror or exc}") from exc
            self._size += len(data)
            self._records += len(records)

    def own_backlog(self) -> int:
        """Records in this process's file not yet replayed."""
        return self._records

    def close(self) -> None:
        """Release the lock; an empty file is removed, a non-empty one stays for the next start."""
        with self._lock:
            if self._fd is None or self._path is None:
                return
            if self._size == 0:
                with contextlib.suppress(OSError):
                    self._path.unlink()
            os.close(self._fd)
            self._fd = None

    # -- replay ----------------------------------------------------------------------------------------

    def orphans(self) -> list[Path]:
        """Spool files left by processes that are gone (their lock is free), oldest first."""
        try:
            candidates = sorted(self.directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        return [p for p in candidates if p != self._path and _unlocked(p)]

    def orphan_backlog(self) -> int:
        """Approximate count of records in orphaned files (lines), for the counters."""
        total = 0
        for path in self.orphans():
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                total += sum(1 for _ in handle)
        return total

    def replay(self, write: Callable[[list[InvocationRecord]], None], batch_size: int) -> ReplayResult:
        """Write every spooled record (orphans first, then this process's file) through ``write``.

        Stops at the first exception from ``write`` and re-raises it; what was written stays written and
        the file stays in place, to be replayed again (the store skips ids it has).
        """
        result = ReplayResult()
        for path in self.orphans():
            with _adopted(path) as handle:
                if handle is None:
                    continue
                self._replay_file(handle, write, batch_size, result)
                with contextlib.suppress(OSError):
                    path.unlink()
                logger.info("audit spool: replayed and removed %s", path.name)
        with self._lock:
            if self._fd is None or self._path is None or self._size == 0:
                return result
            with open(self._path, "rb") as handle:
                self._replay_file(handle, write, batch_size, result)
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = 0
            self._records = 0
        return result

    @staticmethod
    def _replay_file(
        handle: BinaryIO,
        write: Callable[[list[InvocationRecord]], None],
        batch_size: int,
        result: ReplayResult,
    ) -> None:
        batch: list[InvocationRecord] = []
        for line in handle:
            if not line.strip():
                continue
            try:
                batch.append(InvocationRecord.model_validate_json(line))
            except ValidationError:
                result.lost += 1
                logger.error("audit spool: an unreadable record was lost (torn or corrupt line)")
                continue
            if len(batch) >= batch_size:
                write(batch)
                result.written += len(batch)
                batch = []
        if batch:
            write(batch)
            result.written += len(batch)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's lock
    return True


@contextlib.contextmanager
def _adopted(path: Path) -> Iterator[BinaryIO | None]:
    """Open and lock an orphan; None if another process took it first or it is gone."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  closed below, after the lock
    except OSError:
        yield None
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        yield handle if same else None
    finally:
        handle.close()
