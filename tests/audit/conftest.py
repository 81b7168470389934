"""Audit tests run on real databases: a SQLite file in a temporary directory and a real PostgreSQL server.

``database_url`` is parametrised over both backends, so every storage test runs twice. The PostgreSQL
server is started once per session (only when a PostgreSQL test is selected) and each test gets its own
database. Apps under test are real ``create_app`` instances with an audit token and a patient hash key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.config import Settings
from cds_service.main import create_app
from tests.conftest import make_settings
from tests.pg import PostgresServer
from tests.support import NOW, bundle_resources, counter_ids, hook_request, vignette_bundle

AUDIT_TOKEN = "test-audit-token-7f3a9c"
HASH_KEY = "test-patient-hash-key"
PATIENT = "pat-4711-secret"
AUDIT = {"Authorization": f"Bearer {AUDIT_TOKEN}"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.new_database()
    try:
        yield url
    finally:
        server.drop_database(url)


def audit_settings(tmp_path: Path, database_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "audit_token": AUDIT_TOKEN,
        "patient_hash_secret": HASH_KEY,
        "audit_retry_seconds": 0.2,
        "audit_shutdown_seconds": 2.0,
        "database_connect_timeout_seconds": 2.0,
        "database_lock_timeout_seconds": 0.5,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def open_client(settings: Settings, ids: Callable[[], str] | None = None) -> TestClient:
    return TestClient(create_app(settings, clock=lambda: NOW, id_factory=ids or counter_ids()))


@pytest.fixture
def settings_for(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    return lambda **overrides: audit_settings(tmp_path, database_url, **overrides)


@pytest.fixture
def client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with open_client(settings_for()) as test_client:
        yield test_client


def flush(client: TestClient) -> None:
    """Wait until the audit writer has written (or spooled) everything queued."""
    portal: Any = client.portal
    portal.call(client.app.state.cds.audit.writer.flush)  # type: ignore[attr-defined]


def counters(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.app.state.cds.audit.counters()  # type: ignore[attr-defined]
    return result


def private_request(
    case: str = "V01", patient: str = PATIENT, hook_instance: str = "11111111-2222-4333-8444-555555555555"
) -> dict[str, Any]:
    """A vignette re-keyed so that no resource id contains the patient id (they do in the fixtures)."""
    original = f"hw-{case.lower()}"
    text = json.dumps(bundle_resources(vignette_bundle(case)))
    text = text.replace(f'"{original}-', '"res-').replace(f"Patient/{original}", f"Patient/{patient}")
    text = text.replace(f'"id": "{original}"', f'"id": "{patient}"')
    assert original not in text
    return hook_request(json.loads(text), patient, hook_instance=hook_instance)
