"""What the audit writer counts, for ``/metrics`` and ``/readyz``: nothing is lost without a number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WriterCounters:
    """Monotonic counts since start, plus the current backlog and store state."""

    submitted: int = 0  # records accepted into the queue
    written: int = 0  # records stored (including replayed ones)
    failed: int = 0  # store write attempts that failed (each spools or keeps its batch)
    spooled: int = 0  # records written to the spool file
    replayed: int = 0  # spooled records later stored
    dropped: int = 0  # records discarded: queue full, spool full or unwritable
    lost: int = 0  # spooled records that could not be read back
    rejected: int = 0  # records the store refused as invalid (integrity/data errors: a bug; logged)
    build_errors: int = 0  # outcomes a record could not be built from (a bug; logged with its trace)
    queued: int = 0  # current queue length
    backlog: int = 0  # records waiting in spool files
    store_available: bool = True
