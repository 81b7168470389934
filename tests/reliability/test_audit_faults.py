"""The audit store down, slow or full while the service is under load (real HTTP server, 20 concurrent
callers). The clinical answer never waits for the store and never changes; every record is written, or
spooled and replayed when the store is back, or, when nothing can hold it, counted as dropped and logged.

"Down", "slow" and "full" are real: a database in a directory that does not exist yet, a SQLite database
an outside connection holds an exclusive lock on, a spool limited to 4 KB, a queue of 5 records.
(tests/audit/test_store_down.py covers the same faults one call at a time, on SQLite and PostgreSQL.)
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_service.main import create_app
from tests.conftest import make_settings
from tests.reliability import secret_scan
from tests.reliability.conftest import COUNTS
from tests.reliability.servers import ServiceThread
from tests.support import NOW, bundle_resources, hook_request, vignette_bundle

CALLS = 120
CONCURRENCY = 20
HASH_KEY = "audit-faults-hash-key-41"
AUDIT_TOKEN = "audit-faults-token-9d02"


def settings_for(tmp_path: Path, database: Path, **overrides: Any) -> Any:
    secret_scan.register(HASH_KEY, AUDIT_TOKEN)
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{database}",
        "audit_token": AUDIT_TOKEN,
        "patient_hash_secret": HASH_KEY,
        "audit_retry_seconds": 0.2,
        "audit_shutdown_seconds": 2.0,
        "database_lock_timeout_seconds": 0.5,
        **overrides,
    }
    return make_settings(tmp_path, **values)


@contextmanager
def serving(settings: Any) -> Iterator[tuple[ServiceThread, Callable[[], dict[str, Any]]]]:
    app = create_app(settings, clock=lambda: NOW)
    with ServiceThread(app) as service:
        yield service, lambda: dict(app.state.cds.audit.counters())


def load(service: ServiceThread, calls: int = CALLS) -> list[tuple[int, bool, float]]:
    """``calls`` hook calls from CONCURRENCY threads: (status, red flag card, seconds) for each."""
    body = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with httpx.Client(timeout=30, limits=limits) as http, ThreadPoolExecutor(CONCURRENCY) as pool:

        def one(n: int) -> tuple[int, bool, float]:
            started = time.monotonic()
            response = http.post(
                f"{service.url}/cds-services/hip-weakness", json={**body, "hookInstance": f"load-{n}"}
            )
            flagged = response.status_code == 200 and response.json()["cards"][0]["indicator"] == "critical"
            return response.status_code, flagged, time.monotonic() - started

        return list(pool.map(one, range(calls)))


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def assert_all_answered(results: list[tuple[int, bool, float]]) -> None:
    assert [status for status, _, _ in results] == [200] * len(results)
    assert all(flagged for _, flagged, _ in results), "the answer must not depend on the audit store"


def stored(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM audit_invocations").fetchone()[0])


def test_store_down_during_load_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    COUNTS["fault cases"] += 1
    volume = tmp_path / "not-mounted-yet"
    database = volume / "audit.sqlite3"
    with serving(settings_for(tmp_path, database)) as (service, counters):
        results = load(service)
        assert_all_answered(results)
        wait_for(lambda: counters()["spooled"] == CALLS)
        down = counters()
        assert (down["store_available"], down["written"], down["dropped"]) == (False, 0, 0)
        volume.mkdir()  # the store comes back
        wait_for(lambda: counters()["backlog"] == 0 and counters()["written"] == CALLS)
        up = counters()
        assert (up["replayed"], up["dropped"], up["lost"]) == (CALLS, 0, 0)
    assert stored(database) == CALLS
    assert "audit store unavailable" in caplog.text


@contextmanager
def locked_until(database: Path, released: threading.Event) -> Iterator[None]:
    """An outside connection holds an exclusive lock on the SQLite database until ``released`` is set
    (at most a minute, so a failing test cannot hang)."""
    locked = threading.Event()

    def hold() -> None:
        blocker = sqlite3.connect(database, timeout=10, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        locked.set()
        released.wait(60)
        blocker.execute("ROLLBACK")
        blocker.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10), "could not lock the database"
    try:
        yield
    finally:
        released.set()
        thread.join()


def test_a_store_stuck_on_a_lock_does_not_hold_back_the_answers(tmp_path: Path) -> None:
    """The store waits for a lock as long as the outside connection holds it (a lock timeout of
    a minute), and the lock is released only once the whole load has been answered: had an answer
    waited for its audit write, the load could not finish. Ordering, not a stopwatch."""
    COUNTS["fault cases"] += 1
    database = tmp_path / "audit.sqlite3"
    with serving(settings_for(tmp_path, database, database_lock_timeout_seconds=60)) as (service, counters):
        assert load(service, 5)[0][0] == 200  # migrated and warm
        wait_for(lambda: counters()["written"] == 5)
        released = threading.Event()
        with locked_until(database, released):
            results = load(service, 60)
            stuck = counters()
            released.set()
        assert_all_answered(results)
        assert stuck["written"] == 5, "every answer arrived while its record could not be written"
        assert stuck["submitted"] == 65
        wait_for(lambda: counters()["written"] == 65 and counters()["backlog"] == 0)
        assert counters()["dropped"] == 0
    assert stored(database) == 65


def test_a_lock_timeout_sends_the_records_to_the_spool_and_they_are_replayed(tmp_path: Path) -> None:
    """With a short lock timeout (0.5 s) the writer gives up, spools, and replays once the lock is
    gone; the lock is held until the writer has failed, whatever the machine's speed."""
    COUNTS["fault cases"] += 1
    database = tmp_path / "audit.sqlite3"
    with serving(settings_for(tmp_path, database)) as (service, counters):
        assert load(service, 5)[0][0] == 200
        wait_for(lambda: counters()["written"] == 5)
        released = threading.Event()
        with locked_until(database, released):
            results = load(service, 60)
            wait_for(lambda: counters()["failed"] >= 1 and counters()["spooled"] >= 1)
        assert_all_answered(results)
        wait_for(lambda: counters()["written"] == 65 and counters()["backlog"] == 0)
        assert counters()["dropped"] == 0
    assert stored(database) == 65


def test_queue_full_during_load_drops_count_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A queue of 5 records behind a locked store: the overflow is dropped, counted and logged; every
    answer is the same."""
    COUNTS["fault cases"] += 1
    caplog.set_level(logging.WARNING)
    database = tmp_path / "audit.sqlite3"
    settings = settings_for(
        tmp_path, database, audit_queue_max=5, audit_batch_size=1, database_lock_timeout_seconds=60
    )
    with serving(settings) as (service, counters):
        assert load(service, 1)[0][0] == 200
        wait_for(lambda: counters()["written"] == 1)
        with locked_until(database, threading.Event()):  # the writer waits on the lock all along
            results = load(service)
        assert_all_answered(results)
        wait_for(lambda: counters()["queued"] == 0 and counters()["backlog"] == 0)
        final = counters()
        assert final["dropped"] > 0
        assert final["written"] + final["dropped"] == 1 + CALLS
    assert "queue full" in caplog.text
    assert stored(database) == final["written"]


def test_spool_full_while_the_store_is_down_drops_count_and_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    COUNTS["fault cases"] += 1
    database = tmp_path / "never-mounted" / "audit.sqlite3"
    with serving(settings_for(tmp_path, database, audit_spool_max_bytes=4096)) as (service, counters):
        results = load(service)
        assert_all_answered(results)
        wait_for(lambda: counters()["queued"] == 0 and counters()["spooled"] + counters()["dropped"] == CALLS)
        final = counters()
        assert final["dropped"] > 0 and final["spooled"] < CALLS
    assert "cannot spool" in caplog.text
    for spool in (tmp_path / "var" / "audit-spool").glob("*.jsonl"):
        assert spool.stat().st_size <= 4096
        assert "hw-v01" not in spool.read_text()  # the patient is a keyed hash in the spool too
