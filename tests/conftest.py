"""Test application: test settings, frozen clock at the fixture anchor, deterministic ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.config import Settings
from cds_service.main import create_app
from cds_service.registry import RuleSet, load_ruleset
from tests.support import NOW, ROOT, counter_ids


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "auth": "off",
        "rules_dir": ROOT / "rules",
        "data_dir": tmp_path / "var",
        "fhir_time_budget_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def ruleset() -> RuleSet:
    return load_ruleset(ROOT / "rules")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, clock=lambda: NOW, id_factory=counter_ids())
    with TestClient(app) as test_client:
        yield test_client
