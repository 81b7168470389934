"""A real FHIR server for the whole session: sekmet-fhir on 127.0.0.1, bearer token required, loaded
once with the test patients by ``cds-service load-fixtures`` run as a subprocess (as a user runs it)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.sekmet_server import InboundRequest, SekmetServer, running_sekmet
from tests.support import ROOT


@dataclass(frozen=True)
class FirstLoad:
    """The first ``load-fixtures`` run: its JSON report, stderr (progress) and the requests the FHIR
    server received during it."""

    report: dict[str, Any]
    stderr: str
    requests: list[InboundRequest]

    def patient_ids(self) -> dict[str, str]:
        return {p["name"]: p["patient_id"] for p in self.report["patients"]}


@pytest.fixture(scope="session")
def fhir_token() -> str:
    return "sekmet-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory, fhir_token: str) -> Iterator[SekmetServer]:
    with running_sekmet(tmp_path_factory.mktemp("sekmet"), tokens=(fhir_token,), log_inbound=True) as server:
        yield server


@pytest.fixture(scope="session")
def loaded(sekmet: SekmetServer, fhir_token: str) -> FirstLoad:
    """All fixtures loaded by the installed CLI in a subprocess; the token comes from the environment."""
    env = {**os.environ, "FHIR_ACCESS_TOKEN": fhir_token, "NO_COLOR": "1"}
    before = sekmet.last_traffic_id()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "load-fixtures",
            "--fhir-server",
            sekmet.base_url,
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert fhir_token not in done.stdout + done.stderr
    sekmet.last_traffic_id()  # the log has caught up with the last answer
    return FirstLoad(json.loads(done.stdout), done.stderr, sekmet.inbound(before))
