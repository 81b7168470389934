"""The audit store down: hook calls unaffected, records kept; feedback refused (503), nothing half-written.

"Down" is real: a SQLite file in a directory that does not exist yet, a PostgreSQL database not created
yet, a database locked by another connection, a spool directory that is a file. No function of the
service is patched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from cds_service.audit.database import normalise_url
from cds_service.audit.records import InvocationRecord
from cds_service.audit.tables import feedback, invocations
from tests.audit.conftest import AUDIT, PATIENT, audit_settings, counters, flush, open_client, private_request
from tests.pg import PostgresServer
from tests.support import categories

URL = "/cds-services/hip-weakness"
FEEDBACK = f"{URL}/feedback"


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def rows(database_url: str, table: Any) -> int:
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def down_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A database URL that does not work yet, and the function that brings it up."""
    if backend == "sqlite":
        directory = tmp_path / "db-volume"
        yield f"sqlite:///{directory / 'audit.sqlite3'}", directory.mkdir
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield server.url(name), lambda: server.execute(f'CREATE DATABASE "{name}"')
    server.drop_database(server.url(name))


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "var" / "audit-spool").glob("*.jsonl"))


# -- hook calls -----------------------------------------------------------------------------------------


def test_hook_call_while_the_store_is_down_is_answered_and_its_record_kept(
    tmp_path: Path, down_store: tuple[str, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, bring_up = down_store
    with open_client(audit_settings(tmp_path, url)) as client:
        response = client.post(URL, json=private_request())
        assert response.status_code == 200
        assert categories(response.json()) == ["urgent-referral"]  # the same answer as with a store
        flush(client)
        down = counters(client)
        assert down["store_available"] is False
        assert (down["spooled"], down["written"], down["backlog"]) == (1, 0, 1)
        assert down["failed"] >= 1
        assert "audit store unavailable" in caplog.text

        bring_up()
        wait_for(lambda: counters(client)["backlog"] == 0)
        up = counters(client)
        assert up["store_available"] is True
        assert (up["written"], up["replayed"], up["dropped"], up["lost"]) == (1, 1, 0, 0)
        detail = client.get("/audit/invocations/11111111-2222-4333-8444-555555555555", headers=AUDIT)
        assert detail.status_code == 200
        assert detail.json()["fired_rules"] == ["HW", "RF-CES"]
    assert rows(url, invocations) == 1


def test_a_backlog_survives_a_restart(
    tmp_path: Path, down_store: tuple[str, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, bring_up = down_store
    with open_client(audit_settings(tmp_path, url)) as client:
        for n in range(3):
            assert client.post(URL, json=private_request(hook_instance=f"call-{n}")).status_code == 200
    [left] = spool_files(tmp_path)
    assert len(left.read_text().splitlines()) == 3
    assert PATIENT not in left.read_text()

    bring_up()
    with open_client(audit_settings(tmp_path, url)) as client:
        wait_for(lambda: counters(client)["replayed"] == 3)
        items = client.get("/audit/invocations", headers=AUDIT).json()["items"]
        assert sorted(i["hook_instance"] for i in items) == ["call-0", "call-1", "call-2"]
    assert spool_files(tmp_path) == []
    assert rows(url, invocations) == 3
    assert "spooled records from an earlier run will be replayed" in caplog.text


def test_shutdown_writes_what_is_queued(tmp_path: Path, database_url: str) -> None:
    with open_client(audit_settings(tmp_path, database_url)) as client:
        for n in range(20):
            client.post(URL, json=private_request(hook_instance=f"call-{n}"))
    assert rows(database_url, invocations) == 20
    assert spool_files(tmp_path) == []


def test_a_replayed_spool_stores_each_record_once(tmp_path: Path, database_url: str) -> None:
    """A crash after writing but before clearing the spool: the records are replayed, stored once."""
    record = InvocationRecord.model_validate_json(_sample_json())
    with open_client(audit_settings(tmp_path, database_url)) as client:
        writer = client.app.state.cds.audit.writer  # type: ignore[attr-defined]
        client.portal.call(_sync, lambda: writer.enqueue(record))  # type: ignore[union-attr]
        flush(client)
    orphan = tmp_path / "var" / "audit-spool" / "crashed-worker.jsonl"
    orphan.write_text(record.model_dump_json() + "\n")
    with open_client(audit_settings(tmp_path, database_url)) as client:
        wait_for(lambda: counters(client)["replayed"] == 1)
    assert rows(database_url, invocations) == 1
    assert not orphan.exists()


def test_an_unreadable_spool_line_is_counted_as_lost_and_logged(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "var" / "audit-spool"
    spool.mkdir(parents=True)
    (spool / "torn.jsonl").write_text('{"id": "half-writ\n')
    with open_client(audit_settings(tmp_path, database_url)) as client:
        wait_for(lambda: counters(client)["lost"] == 1)
    assert "could not be read back and are lost" in caplog.text


def test_without_a_usable_spool_the_loss_is_counted_and_logged(
    tmp_path: Path, down_store: tuple[str, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = down_store
    not_a_directory = tmp_path / "data-is-a-file"
    not_a_directory.write_text("")
    with open_client(audit_settings(tmp_path, url, data_dir=not_a_directory)) as client:
        assert client.post(URL, json=private_request()).status_code == 200
        flush(client)
        assert counters(client)["dropped"] == 1
    assert "spool unavailable" in caplog.text
    assert "records dropped" in caplog.text


def test_a_full_queue_drops_counts_and_logs(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_client(audit_settings(tmp_path, database_url, audit_queue_max=1)) as client:
        writer = client.app.state.cds.audit.writer  # type: ignore[attr-defined]
        record = InvocationRecord.model_validate_json(_sample_json())

        def burst() -> None:  # on the app's loop, without yielding: the writer cannot drain in between
            writer.enqueue(record)
            writer.enqueue(record.model_copy(update={"id": "other"}))

        client.portal.call(_sync, burst)  # type: ignore[union-attr]
        flush(client)
        assert counters(client)["dropped"] == 1
    assert "queue full" in caplog.text


async def _sync(func: Callable[[], None]) -> None:
    func()


def _sample_json() -> str:
    return (
        '{"id":"r1","hook_instance":"h","service_id":"hip-weakness","hook":"patient-view",'
        '"started_at":"2026-01-15T12:00:00Z","duration_ms":1.0,"client_iss":null,"client_tenant":null,'
        '"patient_hash":null,"rules_version":"x","prefetch":{},"hip_weakness":false,"red_flag":false,'
        '"highest_indicator":null,"unreadable_count":0,"trace":{}}'
    )


# -- feedback -----------------------------------------------------------------------------------------


def feedback_body(card: str = "card-1") -> dict[str, Any]:
    return {
        "feedback": [
            {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-01-15T12:05:00Z"},
            {"card": "card-2", "outcome": "overridden", "outcomeTimestamp": "2026-01-15T12:05:00Z"},
        ]
    }


def assert_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"
    assert "nothing was stored" in body["issue"][0]["diagnostics"]


def test_feedback_while_the_store_is_down_is_503_then_stored_once(
    tmp_path: Path, down_store: tuple[str, Callable[[], None]]
) -> None:
    url, bring_up = down_store
    with open_client(audit_settings(tmp_path, url)) as client:
        assert_503(client.post(FEEDBACK, json=feedback_body()))
        assert client.get("/audit/stats", headers=AUDIT).status_code == 503
        assert counters(client)["feedback_failed"] == 2
        bring_up()
        wait_for(lambda: client.post(FEEDBACK, json=feedback_body()).status_code == 200)
        assert client.post(FEEDBACK, json=feedback_body()).status_code == 200  # the EHR's retry
    assert rows(url, feedback) == 2


def test_feedback_when_the_database_is_locked_is_503_and_nothing_half_written(
    tmp_path: Path, backend: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    with open_client(audit_settings(tmp_path, database_url)) as client:
        assert client.post(FEEDBACK, json={"feedback": [feedback_body()["feedback"][1]]}).status_code == 200
        blocker = create_engine(normalise_url(database_url))
        with blocker.connect() as conn:
            if backend == "sqlite":
                conn.exec_driver_sql("BEGIN EXCLUSIVE")
            else:
                conn.execute(text("LOCK TABLE audit_feedback IN ACCESS EXCLUSIVE MODE"))
            assert_503(client.post(FEEDBACK, json=feedback_body("card-3")))
            conn.rollback()
        blocker.dispose()
        assert rows(database_url, feedback) == 1  # neither card-3 nor a second card-2
        assert client.post(FEEDBACK, json=feedback_body("card-3")).status_code == 200
    assert rows(database_url, feedback) == 2


def test_the_service_starts_with_the_store_down_and_logs_it(
    tmp_path: Path, down_store: tuple[str, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url, _ = down_store
    with open_client(audit_settings(tmp_path, url)) as client:
        assert client.get("/cds-services").status_code == 200
    assert "unavailable at start-up" in caplog.text
    assert "password" not in caplog.text.lower()


def test_a_record_the_store_refuses_does_not_hold_up_the_others(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = InvocationRecord.model_validate_json(_sample_json())
    card = {
        "position": 0,
        "uuid": "c",
        "category": "physiotherapy",
        "indicator": "info",
        "summary": "s",
        "rule_ids": [],
        "suggestion_ids": [],
    }
    bad = InvocationRecord.model_validate(
        {**good.model_dump(), "id": "bad", "cards": [card, card]}
    )  # same key
    with open_client(audit_settings(tmp_path, database_url)) as client:
        writer = client.app.state.cds.audit.writer  # type: ignore[attr-defined]

        def burst() -> None:
            writer.enqueue(bad)
            writer.enqueue(good)

        client.portal.call(_sync, burst)  # type: ignore[union-attr]
        flush(client)
        seen = counters(client)
        assert (seen["written"], seen["rejected"], seen["spooled"]) == (1, 1, 0)
        assert seen["store_available"] is True
    assert rows(database_url, invocations) == 1
    assert "the store refused record bad" in caplog.text
