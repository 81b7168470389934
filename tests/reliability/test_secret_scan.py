"""The whole-session secret scan really catches a leak (checked on a separate scanner, so the session
itself is not failed), and it is really listening to the session's logs."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.reliability import secret_scan
from tests.reliability.secret_scan import SCAN, SecretScan


@pytest.fixture
def private_logger() -> logging.Logger:
    """A logger whose records do not reach the root logger (nor the session scan)."""
    logger = logging.getLogger("tests.reliability.secret-scan-self-test")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_logged_secret_is_found(private_logger: logging.Logger) -> None:
    scan = SecretScan()
    private_logger.addHandler(scan)
    try:
        scan.register("s3cr3t-access-token-xyz", "hw-v42")
        private_logger.info("calling %s with token %s", "https://fhir.example.org", "s3cr3t-access-token-xyz")
        private_logger.debug("nothing to see here")
        try:
            raise ValueError("patient hw-v42 not found")
        except ValueError:
            private_logger.exception("lookup failed")
    finally:
        private_logger.removeHandler(scan)
    leaks = scan.leaks()
    assert {leak.secret for leak in leaks} == {"s3cr3t-access-token-xyz", "hw-v42"}
    assert all(leak.source == private_logger.name for leak in leaks)
    assert "s3cr3t..." in leaks[0].describe() or "hw-v42" in leaks[0].describe()


def test_the_signature_of_a_jwt_is_enough(private_logger: logging.Logger) -> None:
    scan = SecretScan()
    token = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJodHRwczovL2VociJ9." + "s" * 64
    scan.register(token)
    private_logger.addHandler(scan)
    try:
        private_logger.warning("signature %s", token.rsplit(".", 1)[1])
    finally:
        private_logger.removeHandler(scan)
    assert len(scan.leaks()) == 1


def test_process_logs_and_bodies_are_searched_too() -> None:
    scan = SecretScan()
    scan.register("audit-token-abcdef")
    scan.add_text("cds-service process log", "INFO ready\nERROR audit-token-abcdef was here\n")
    assert [leak.source for leak in scan.leaks()] == ["cds-service process log"]
    with pytest.raises(AssertionError, match="contains a registered secret"):
        scan.assert_clean('{"resourceType": "OperationOutcome", "diagnostics": "audit-token-abcdef"}')
    scan.assert_clean('{"resourceType": "OperationOutcome"}')


def test_short_values_are_not_secrets() -> None:
    scan = SecretScan()
    scan.register("abc", "", None)
    assert scan.secrets == set()


def test_the_session_scan_listens_to_the_service(client: TestClient) -> None:
    """The session scan is on the root logger and sees what the service logs (INFO and DEBUG too)."""
    assert SCAN in logging.getLogger().handlers
    assert logging.getLogger("cds_service").getEffectiveLevel() == logging.DEBUG
    before = SCAN.records
    client.get("/cds-services/unknown")  # whatever the service logs about it
    logging.getLogger("cds_service.self-test").debug("a debug line of the service")
    assert SCAN.records > before
    assert any(source == "cds_service.self-test" for source, _ in SCAN.texts[-5:])
    assert "hw-v01" in SCAN.secrets  # the fixtures' patient ids are registered for the whole session
    secret_scan.register("registered-by-a-test-1234")
    assert "registered-by-a-test-1234" in SCAN.secrets
