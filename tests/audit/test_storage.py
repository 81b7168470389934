"""The storage layer on SQLite and on PostgreSQL: migrations, idempotent writes, queries, replay cache."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from cds_service.audit.database import Database, alembic_config, head_revision
from cds_service.audit.feedback import FeedbackRequest, entries
from cds_service.audit.queries import InvocationFilter
from cds_service.audit.records import CardRecord, FiredRule, InvocationRecord
from cds_service.audit.replay_cache import DatabaseReplayCache
from cds_service.audit.repository import AuditStore
from cds_service.audit.tables import cards, feedback, fired_rules, invocations, jwt_replay, metadata

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, lock_timeout=1.0)
    db.migrate()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def store(database: Database) -> AuditStore:
    return AuditStore(database)


def record(n: int = 1, **overrides: Any) -> InvocationRecord:
    values: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "hook_instance": f"hook-{n}",
        "service_id": "hip-weakness",
        "hook": "patient-view",
        "started_at": T0 + timedelta(minutes=n),
        "duration_ms": 12.5,
        "client_iss": "https://ehr.example.org/fhir",
        "client_tenant": "tenant-a",
        "patient_hash": "a" * 64,
        "rules_version": "abc123",
        "prefetch": {"conditions": "supplied", "observations": "fetched", "patient": "null"},
        "hip_weakness": True,
        "red_flag": True,
        "highest_indicator": "critical",
        "unreadable_count": 0,
        "trace": {"rules": [{"id": "RF-CES", "version": "1.0.0", "pathway": "red-flag", "fired": True}]},
        "fired": [FiredRule(rule_id="RF-CES", rule_version="1.0.0", pathway="red-flag")],
        "cards": [
            CardRecord(
                position=0,
                uuid=f"card-{n}",
                category="urgent-referral",
                indicator="critical",
                summary="Red flag with hip weakness: same-day emergency assessment",
                rule_ids=["RF-CES"],
                suggestion_ids=[f"sugg-{n}"],
            )
        ],
    }
    values.update(overrides)
    return InvocationRecord(**values)


def count(database: Database, table: Any) -> int:
    with database.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


# -- migrations ---------------------------------------------------------------------------------------


def test_migrations_reach_head_and_match_the_table_definitions(database: Database) -> None:
    assert database.current_revision() == head_revision()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert database.migrate() == head_revision()  # idempotent


def test_migrations_downgrade_and_upgrade_again(database: Database) -> None:
    config = alembic_config()
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    database.migrate()
    assert {"audit_invocations", "audit_feedback", "jwt_replay"} <= set(
        inspect(database.engine).get_table_names()
    )


# -- invocations --------------------------------------------------------------------------------------


def test_a_record_written_twice_is_stored_once(store: AuditStore, database: Database) -> None:
    assert store.write_invocations([record(1), record(1), record(2)]) == 2
    assert store.write_invocations([record(1)]) == 0  # a replayed spool
    assert count(database, invocations) == 2
    assert count(database, fired_rules) == 2
    assert count(database, cards) == 2


def test_the_stored_call_reads_back_whole_with_utc_times(store: AuditStore) -> None:
    store.write_invocations([record(1)])
    detail = store.invocation("hook-1")
    assert detail is not None
    assert detail.started_at == T0 + timedelta(minutes=1)
    assert detail.started_at.tzinfo is not None
    assert detail.prefetch == {"conditions": "supplied", "observations": "fetched", "patient": "null"}
    assert detail.fired_rules == ["RF-CES"]
    assert detail.categories == ["urgent-referral"]
    assert detail.cards[0].uuid == "card-1" and detail.cards[0].rule_ids == ["RF-CES"]
    assert detail.trace.rules[0].id == "RF-CES" and detail.trace.rules[0].fired
    assert (detail.client_iss, detail.client_tenant) == ("https://ehr.example.org/fhir", "tenant-a")
    assert store.invocation("no-such-hook") is None


def test_a_repeated_hook_instance_lists_the_other_calls(store: AuditStore) -> None:
    store.write_invocations([record(1), record(2, hook_instance="hook-1")])
    latest = store.invocation("hook-1")
    assert latest is not None and latest.id.endswith("2")
    assert [c.id for c in latest.other_calls] == [record(1).id]
    earlier = store.invocation("hook-1", record(1).id)
    assert earlier is not None and earlier.id == record(1).id


def test_filters(store: AuditStore) -> None:
    quiet = record(
        3,
        patient_hash="b" * 64,
        fired=[FiredRule(rule_id="H-OA", rule_version="1.0.0", pathway="hip")],
        cards=[
            CardRecord(
                position=0,
                uuid="card-3",
                category="physiotherapy",
                indicator="info",
                summary="Physiotherapy",
                rule_ids=["H-OA"],
                suggestion_ids=[],
            )
        ],
        service_id="hip-weakness-order-sign",
    )
    store.write_invocations([record(1), record(2), quiet])

    def ids(**conditions: Any) -> list[str]:
        page = store.list_invocations(InvocationFilter(**conditions), limit=10, offset=0)
        return [i.hook_instance for i in page.items]

    assert ids() == ["hook-3", "hook-2", "hook-1"]  # newest first
    assert ids(rule="RF-CES") == ["hook-2", "hook-1"]
    assert ids(rule="H-OA") == ["hook-3"]
    assert ids(category="physiotherapy") == ["hook-3"]
    assert ids(indicator="critical") == ["hook-2", "hook-1"]
    assert ids(category="physiotherapy", indicator="critical") == []
    assert ids(patient_hash="b" * 64) == ["hook-3"]
    assert ids(card="card-2") == ["hook-2"]
    assert ids(service="hip-weakness") == ["hook-2", "hook-1"]
    assert ids(since=T0 + timedelta(minutes=2)) == ["hook-3", "hook-2"]
    assert ids(until=T0 + timedelta(minutes=2)) == ["hook-1"]
    assert ids(client_iss="https://other.example.org") == []

    first = store.list_invocations(InvocationFilter(), limit=2, offset=0)
    assert first.next_offset == 2
    assert [i.hook_instance for i in store.list_invocations(InvocationFilter(), 2, 2).items] == ["hook-1"]
    assert store.list_invocations(InvocationFilter(), 2, 2).next_offset is None


# -- feedback -----------------------------------------------------------------------------------------


def feedback_entries(body: dict[str, Any]) -> list[Any]:
    return entries(
        FeedbackRequest.model_validate(body),
        "hip-weakness",
        client_iss=None,
        client_tenant=None,
        received_at=T0,
        store_comments=False,
    )


def test_feedback_is_stored_once_and_linked_to_its_card(store: AuditStore, database: Database) -> None:
    store.write_invocations([record(1)])
    body = {
        "feedback": [
            {
                "card": "card-1",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "sugg-1"}],
                "outcomeTimestamp": "2026-01-15T12:05:00Z",
            }
        ]
    }
    assert store.write_feedback(feedback_entries(body)) == (1, 0)
    assert store.write_feedback(feedback_entries(body)) == (0, 1)
    assert count(database, feedback) == 1
    detail = store.invocation("hook-1")
    assert detail is not None
    [fb] = detail.cards[0].feedback
    assert (fb.outcome, fb.accepted_suggestions) == ("accepted", ["sugg-1"])
    assert fb.outcome_at == datetime(2026, 1, 15, 12, 5, tzinfo=UTC)


def test_stats_count_distinct_cards_per_rule_and_category(store: AuditStore) -> None:
    store.write_invocations([record(1), record(2)])
    reason = {"system": "http://example.org/reasons", "code": "not-applicable", "display": "Not applicable"}
    store.write_feedback(
        feedback_entries(
            {
                "feedback": [
                    {"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-15T12:05:00Z"},
                    {"card": "card-1", "outcome": "accepted", "outcomeTimestamp": "2026-01-15T12:06:00Z"},
                    {
                        "card": "card-2",
                        "outcome": "overridden",
                        "overrideReason": {"reason": reason, "userComment": "x"},
                        "outcomeTimestamp": "2026-01-15T12:07:00Z",
                    },
                    {"card": "unknown", "outcome": "overridden", "outcomeTimestamp": "2026-01-15T12:07:00Z"},
                    {"outcome": "overridden", "outcomeTimestamp": "2026-01-15T12:08:00Z"},
                ]
            }
        )
    )
    counts = store.counts(None, None, None)
    assert counts["invocations"] == 2
    assert counts["feedback_without_card"] == 1
    assert counts["feedback_unmatched"] == 1
    rows = store.feedback_rows(None, None, None)
    assert sorted((r.uuid, r.outcome) for r in rows) == [
        ("card-1", "accepted"),
        ("card-1", "accepted"),
        ("card-2", "overridden"),
    ]


# -- JWT replay cache ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_jti_seen_by_one_worker_is_a_replay_for_another(database_url: str) -> None:
    """Two processes sharing the database: two Database objects, two caches."""
    clock = Clock()
    first_db, second_db = Database(database_url), Database(database_url)
    first_db.migrate()
    first = DatabaseReplayCache(first_db, clock=clock)
    second = DatabaseReplayCache(second_db, clock=clock)

    async def scenario() -> list[bool]:
        return [
            await first.check_and_store("iss-a", "jti-1", clock.now + 60),
            await second.check_and_store("iss-a", "jti-1", clock.now + 60),
            await second.check_and_store("iss-b", "jti-1", clock.now + 60),
            await first.check_and_store("iss-a", "jti-2", clock.now + 60),
        ]

    try:
        assert asyncio.run(scenario()) == [False, True, False, False]
        assert first.fallbacks == second.fallbacks == 0
    finally:
        first_db.close()
        second_db.close()


def test_expired_entries_are_reused_and_cleaned_up(database: Database) -> None:
    clock = Clock()
    other_worker = DatabaseReplayCache(database, clock=clock)
    cache = DatabaseReplayCache(database, clock=clock)

    async def scenario() -> list[bool]:
        seen = [await other_worker.check_and_store("iss", "old", clock.now + 10)]
        clock.now += 11
        seen.append(await cache.check_and_store("iss", "old", clock.now + 10))  # expired: not a replay
        clock.now += 120
        seen.append(await cache.check_and_store("iss", "new", clock.now + 10))  # triggers the clean-up
        return seen

    assert asyncio.run(scenario()) == [False, False, False]
    assert count(database, jwt_replay) == 1


def test_replay_cache_falls_back_to_memory_when_the_database_is_down(tmp_path: Any) -> None:
    down = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite3'}")
    cache = DatabaseReplayCache(down, retry_seconds=60)

    async def scenario() -> list[bool]:
        return [
            await cache.check_and_store("iss", "jti", 4_000_000_000),
            await cache.check_and_store("iss", "jti", 4_000_000_000),
            await cache.check_and_store("iss", "other", 4_000_000_000),
        ]

    try:
        assert asyncio.run(scenario()) == [False, True, False]  # same process: still detected
        assert cache.fallbacks == 2
    finally:
        down.close()


def test_workers_starting_together_migrate_once(database_url: str, tmp_path: Path) -> None:
    """Three processes migrating the same fresh database at once (PostgreSQL advisory lock, SQLite file
    lock): every one ends at the newest revision, none fails on a table another one created."""
    env = {
        **os.environ,
        "CDS_ENV": "development",
        "CDS_DATABASE_URL": database_url,
        "CDS_DATA_DIR": str(tmp_path / "data"),
    }
    command = [sys.executable, "-m", "cds_service.cli", "migrate"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert all(f"is at revision {head_revision()}" in out for out in outputs), outputs


def test_migrations_in_one_process_are_serialised(database_url: str) -> None:
    """Alembic's context is process-global: concurrent migrations from threads must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    databases = [Database(database_url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            assert list(pool.map(lambda db: db.migrate(), databases)) == [head_revision()] * 3
    finally:
        for db in databases:
            db.close()
