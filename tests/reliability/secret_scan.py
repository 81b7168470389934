"""Secrets must never reach a log: every log record of the whole test session is kept and, at the end,
searched for every secret a test registered (tokens, JWTs, audit tokens, hash keys, patient ids).

``tests/conftest.py`` installs ``SCAN`` on the root logger for the session (the service's loggers at DEBUG,
so that its debug lines are searched too, the rest at INFO) and fails the session's last teardown when a
registered secret was logged. Tests
register what they use with ``register(...)``; logs of processes they start (uvicorn workers, sekmet) are
added with ``add_text(source, text)``. ``assert_clean(text)`` checks an HTTP body at once.

Records of the test side's own HTTP clients (``httpx2`` is starlette's TestClient, ``urllib3`` is
schemathesis' requests) are not the service's logs: they are left out. The service's own ``httpx`` logger
is kept (``cds_service.logs.quiet_http_clients`` keeps its URLs, which carry patient ids, out).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TEST_CLIENT_LOGGERS = ("httpx2", "urllib3")
#: Shortest value accepted as a secret: shorter strings would match by chance.
MIN_SECRET_CHARS = 6


@dataclass(frozen=True)
class Leak:
    secret: str
    source: str  # logger name, or the process log it came from
    text: str

    def describe(self) -> str:
        shown = self.secret[:6] + "..." if len(self.secret) > 12 else self.secret
        return f"{self.source}: secret {shown!r} in {self.text[:200]!r}"


class SecretScan(logging.Handler):
    """A logging handler that keeps every record's text, and the search over them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.secrets: set[str] = set()
        self.texts: list[tuple[str, str]] = []  # (source, text)
        self.records = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(TEST_CLIENT_LOGGERS):
            return
        try:
            text = record.getMessage()
        except Exception:  # a broken log call must not break the test; keep what we have
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        with self._guard:
            self.records += 1
            self.texts.append((record.name, text))

    def register(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= MIN_SECRET_CHARS:
                with self._guard:
                    self.secrets.add(value)
                    signature = value.rsplit(".", 1)[1] if value.count(".") == 2 else ""
                    if len(signature) >= 20:  # a JWT: its signature alone too
                        self.secrets.add(signature)

    def add_text(self, source: str, text: str) -> None:
        with self._guard:
            self.texts.append((source, text))

    def add_file(self, source: str, path: Path) -> None:
        if path.exists():
            self.add_text(source, path.read_text(errors="replace"))

    def leaks(self, secrets: Iterable[str] | None = None) -> list[Leak]:
        with self._guard:
            wanted = sorted(set(secrets) if secrets is not None else self.secrets)
            texts = list(self.texts)
        if not wanted or not texts:
            return []
        joined = "\x00".join(text for _, text in texts)
        found: list[Leak] = []
        for secret in wanted:
            if secret not in joined:  # one C-speed search per secret; details only when found
                continue
            found += [Leak(secret, source, text) for source, text in texts if secret in text]
        return found

    def assert_clean(self, text: str, what: str = "response body") -> None:
        """Fail at once if ``text`` (e.g. an error body) holds a registered secret."""
        with self._guard:
            present = [s for s in self.secrets if s in text]
        assert not present, f"{what} contains a registered secret: {[s[:6] + '...' for s in present]}"


SCAN = SecretScan()


def register(*values: str | None) -> None:
    """Register secrets this test uses; the session fails if any of them is ever logged."""
    SCAN.register(*values)


def add_text(source: str, text: str) -> None:
    SCAN.add_text(source, text)


def assert_clean(text: str, what: str = "response body") -> None:
    SCAN.assert_clean(text, what)


def fixture_patient_ids(fixtures: Path) -> list[str]:
    """The patient ids of the test patients: the vignettes (``hw-v01`` ...) and the Synthea patients."""
    ids: list[str] = []
    expected = fixtures / "vignettes" / "expected.json"
    if expected.exists():
        cases = json.loads(expected.read_text()).get("cases", {})
        ids += [str(case["patient"]) for case in cases.values() if case.get("patient")]
    for path in sorted((fixtures / "synthea").glob("*.json")):
        bundle = json.loads(path.read_text())
        ids += [
            str(e["resource"]["id"])
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Patient" and e["resource"].get("id")
        ]
    return ids
