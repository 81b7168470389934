"""Test application: test settings, frozen clock at the fixture anchor, deterministic ids.

Also the whole-suite secret scan (``tests/reliability/secret_scan.py``): every log record of the session
is kept and searched at the end for the secrets tests registered; a leak fails the session.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.catalog import Catalog, load_catalog
from cds_service.config import Settings
from cds_service.main import create_app
from tests.pg import PostgresServer, start_postgres
from tests.reliability import secret_scan
from tests.security.helpers import KeyRing, ec_key, rsa_key
from tests.support import FIXTURES, NOW, ROOT, counter_ids

#: Secrets that test modules outside tests/reliability declare as constants: searched for when the
#: module was loaded (module, attribute).
DECLARED_SECRETS = (
    ("tests.audit.conftest", "AUDIT_TOKEN"),
    ("tests.audit.conftest", "HASH_KEY"),
    ("tests.audit.conftest", "PATIENT"),
    ("tests.api.test_prefetch_fhir", "TOKEN"),
)


@pytest.fixture(scope="session")
def keys() -> KeyRing:
    """The test key pairs (EC P-384 and RSA): generated once, read-only."""
    return KeyRing(ec1=ec_key("ec-1"), rsa1=rsa_key("rsa-1"), ec2=ec_key("ec-2"), impostor=ec_key("ec-1"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session (installed and started by ``tests/pg.py``); each test
    that needs a clean database takes ``postgres.new_database()``."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def secret_scan_of_the_whole_session() -> Iterator[secret_scan.SecretScan]:
    """Keep every log record of the session (the service's from DEBUG, everything else's from INFO: the
    test side's HTTP clients log each connection at DEBUG, which would only slow the suite); fail at its
    end if a secret was logged."""
    scan = secret_scan.SCAN
    root, service = logging.getLogger(), logging.getLogger("cds_service")
    previous = root.level, service.level
    root.addHandler(scan)
    root.setLevel(logging.INFO)
    service.setLevel(logging.DEBUG)
    scan.register(*secret_scan.fixture_patient_ids(FIXTURES))
    try:
        yield scan
    finally:
        root.removeHandler(scan)
        root.setLevel(previous[0])
        service.setLevel(previous[1])
    for module, name in DECLARED_SECRETS:
        value = getattr(sys.modules.get(module), name, None)
        scan.register(value if isinstance(value, str) else None)
    leaks = scan.leaks()
    if leaks:
        pytest.fail(
            f"{len(leaks)} log line(s) hold a registered secret:\n"
            + "\n".join(leak.describe() for leak in leaks[:20]),
            pytrace=False,
        )


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
def catalog() -> Catalog:
    return load_catalog(ROOT / "rules")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, clock=lambda: NOW, id_factory=counter_ids())
    with TestClient(app) as test_client:
        yield test_client
