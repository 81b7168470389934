"""The spool file: one per process, locked while it lives, adopted by others once its process is gone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service.audit.records import InvocationRecord
from cds_service.audit.spool import Spool, SpoolFull, SpoolUnavailable


def records(*ids: str) -> list[InvocationRecord]:
    base = InvocationRecord(
        id="x",
        hook_instance="h",
        service_id="hip-weakness",
        hook="patient-view",
        started_at=datetime(2026, 1, 15, 12, tzinfo=UTC),
        duration_ms=1.0,
        client_iss=None,
        client_tenant=None,
        patient_hash=None,
        rules_version="v",
        prefetch={},
        hip_weakness=False,
        red_flag=False,
        highest_indicator=None,
        unreadable_count=0,
        trace={},
    )
    return [base.model_copy(update={"id": i}) for i in ids]


def test_a_live_workers_file_is_not_adopted_until_it_is_gone(tmp_path: Path) -> None:
    worker_a, worker_b = Spool(tmp_path, 1 << 20), Spool(tmp_path, 1 << 20)
    worker_a.open()
    worker_b.open()
    worker_a.append(records("a1", "a2"))
    assert worker_b.orphans() == []  # locked by worker A
    written: list[str] = []
    worker_b.replay(lambda batch: written.extend(r.id for r in batch), batch_size=10)
    assert written == []

    worker_a.close()  # A stops with a backlog: its file stays
    assert worker_b.orphan_backlog() == 2
    worker_b.replay(lambda batch: written.extend(r.id for r in batch), batch_size=1)
    assert written == ["a1", "a2"]
    assert worker_b.orphans() == []
    worker_b.close()
    assert list(tmp_path.glob("*.jsonl")) == []  # B's own empty file is removed too


def test_a_failed_replay_keeps_the_file_for_the_next_attempt(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.append(records("r1", "r2", "r3"))

    def failing(batch: list[InvocationRecord]) -> None:
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        spool.replay(failing, batch_size=2)
    assert spool.own_backlog() == 3
    seen: list[str] = []
    result = spool.replay(lambda batch: seen.extend(r.id for r in batch), batch_size=2)
    assert (seen, result.written, spool.own_backlog()) == (["r1", "r2", "r3"], 3, 0)
    spool.close()


def test_the_size_limit_refuses_whole_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 600)
    spool.open()
    spool.append(records("r1"))
    with pytest.raises(SpoolFull):
        spool.append(records("r2", "r3"))
    assert spool.own_backlog() == 1
    spool.close()


def test_an_unusable_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(blocker / "spool", 1 << 20)
    with pytest.raises(SpoolUnavailable):
        spool.open()
    with pytest.raises(SpoolUnavailable):
        spool.append(records("r1"))
