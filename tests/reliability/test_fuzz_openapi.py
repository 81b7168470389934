"""Property-based fuzzing of every operation of the OpenAPI document (schemathesis, in process over ASGI).

Each operation is fuzzed with generated valid requests (positive) and requests that break the schema
(negative); the hook, explain and feedback operations are fuzzed against every real service id as well,
so that the bodies reach the service instead of a 404. Deterministic: fixed seed, derandomized, a fixed
number of cases per operation (more than 1,000 in all). Every response must pass:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the document lists for the operation;
- ``content_type_conformance`` and ``response_schema_conformance``: the body matches the document;
- ``response_headers_conformance``: documented headers are present;
- ``operation_outcome_on_errors`` (ours): every non-2xx body is a FHIR OperationOutcome, served as
  ``application/fhir+json``, holding no secret.

EHR endpoints run with authentication off (the token checks are in test_tokens.py); the audit and explain
endpoints get the audit token.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.main import create_app
from tests.conftest import make_settings
from tests.reliability import secret_scan
from tests.reliability.conftest import COUNTS

SEED = 20260115
AUDIT_TOKEN = "fuzz-audit-token-4c1d8e2b7a"
HASH_KEY = "fuzz-patient-hash-key-93b1"
SERVICES = ("hip-weakness", "hip-weakness-order-select", "hip-weakness-order-sign")
NEEDS_AUDIT_TOKEN = ("/audit", "/explain")
FLOOR = 0.9  # hypothesis may stop early when an operation's input space is exhausted


@dataclass(frozen=True)
class Spec:
    """How many cases of one operation, in one generation mode, with which path parameters."""

    label: str
    mode: GenerationMode
    examples: int
    path_parameters: dict[str, str] = field(default_factory=dict)
    valid_context: bool = False  # replace the generated hook and context by valid ones for the service

    @property
    def floor(self) -> int:
        return 1 if self.examples == 1 else math.ceil(self.examples * FLOOR)

    @property
    def id(self) -> str:
        where = ",".join(self.path_parameters.values())
        valid = " valid-context" if self.valid_context else ""
        return f"{self.label} {self.mode.value}{' ' + where if where else ''}{valid}"


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


def _both(label: str, positive: int, negative: int, **path: str) -> list[Spec]:
    return [Spec(label, POSITIVE, positive, path), Spec(label, NEGATIVE, negative, path)]


SPECS: list[Spec] = [
    *(s for sid in SERVICES for s in _both("POST /cds-services/{service_id}", 130, 50, service_id=sid)),
    *(
        Spec("POST /cds-services/{service_id}", POSITIVE, 80, {"service_id": sid}, valid_context=True)
        for sid in SERVICES
    ),
    Spec("POST /cds-services/{service_id}", POSITIVE, 20),
    *_both("POST /explain/{service_id}", 90, 40, service_id="hip-weakness"),
    *_both("POST /cds-services/{service_id}/feedback", 90, 40, service_id="hip-weakness"),
    *_both("GET /audit/invocations", 80, 40),
    *_both("GET /audit/invocations/{hook_instance}", 60, 30),
    *_both("GET /audit/stats", 60, 30),
    Spec("GET /rules/{rule_id}", POSITIVE, 25),
    Spec("GET /rules/{rule_id}", POSITIVE, 1, {"rule_id": "RF-CES"}),
    Spec("GET /valuesets/{valueset_id}", POSITIVE, 25),
    *_both("GET /fhir/ValueSet", 25, 10),
    *_both("GET /fhir/ValueSet/$expand", 15, 5),
    Spec("GET /fhir/ValueSet/{resource_id}", POSITIVE, 15),
    Spec("GET /fhir/ValueSet/{resource_id}", POSITIVE, 1, {"resource_id": "recent-trauma"}),
    Spec("GET /fhir/ValueSet/{resource_id}/$expand", POSITIVE, 10),
    Spec("GET /fhir/ValueSet/{resource_id}/$expand", POSITIVE, 1, {"resource_id": "hip-oa"}),
    *_both("GET /fhir/PlanDefinition", 15, 5),
    Spec("GET /fhir/PlanDefinition/{resource_id}", POSITIVE, 10),
    Spec("GET /fhir/PlanDefinition/{resource_id}", POSITIVE, 1, {"resource_id": "hip-weakness"}),
    *_both("GET /fhir/ActivityDefinition", 15, 5),
    Spec("GET /fhir/ActivityDefinition/{resource_id}", POSITIVE, 10),
    *(
        Spec(f"GET {path}", POSITIVE, 1)
        for path in (
            "/cds-services",
            "/rules",
            "/rules/vocabulary",
            "/valuesets",
            "/healthz",
            "/readyz",
            "/metrics",
            "/fhir/metadata",
        )
    ),
]


def _draft_orders() -> dict[str, Any]:
    physiotherapy = {"system": "http://snomed.info/sct", "code": "306170007", "display": "Physiotherapy"}
    draft = {
        "resourceType": "ServiceRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [physiotherapy]},
        "subject": {"reference": "Patient/hw-v01"},
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}


CONTEXTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hip-weakness": ("patient-view", {"userId": "Practitioner/fuzz", "patientId": "hw-v01"}),
    "hip-weakness-order-sign": (
        "order-sign",
        {"userId": "Practitioner/fuzz", "patientId": "hw-v01", "draftOrders": _draft_orders()},
    ),
    "hip-weakness-order-select": (
        "order-select",
        {
            "userId": "Practitioner/fuzz",
            "patientId": "hw-v01",
            "draftOrders": _draft_orders(),
            "selections": ["ServiceRequest/draft-1"],
        },
    ),
}


def with_valid_context(service_id: str) -> Any:
    """Keep the generated prefetch, fhirServer, fhirAuthorization and extension; make the rest valid."""
    hook, context = CONTEXTS[service_id]

    def fix(case: Any) -> Any:
        if isinstance(case.body, dict):
            case.body = {**case.body, "hook": hook, "hookInstance": "fuzz-call", "context": context}
        return case

    return fix


def test_the_specs_fuzz_at_least_1000_cases_and_cover_every_operation(schema: Any) -> None:
    assert sum(spec.floor for spec in SPECS) >= 1000
    documented = {result.ok().label for result in schema.get_all_operations()}
    assert documented == {spec.label for spec in SPECS}, "a new operation must be added to SPECS"


def operation_outcome_on_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every non-2xx answer is an OperationOutcome (application/fhir+json) and holds no secret."""
    if response.status_code < 400:
        return None
    media = response.headers.get("content-type", [""])
    media = media[0] if isinstance(media, list) else media
    assert media.split(";")[0] == "application/fhir+json", f"error served as {media!r}"
    body = json.loads(response.content)
    assert body.get("resourceType") == "OperationOutcome", body
    issues = body.get("issue")
    assert isinstance(issues, list) and issues, body
    for issue in issues:
        assert issue.get("severity") in ("fatal", "error", "warning", "information"), issue
        assert isinstance(issue.get("code"), str) and issue["code"], issue
    secret_scan.assert_clean(response.content.decode("utf-8", "replace"), "error body")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    operation_outcome_on_errors,
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    secret_scan.register(AUDIT_TOKEN, HASH_KEY)
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(tmp, audit_token=AUDIT_TOKEN, patient_hash_secret=HASH_KEY)
    return create_app(settings, transport=httpx.MockTransport(no_network))


def no_network(request: httpx.Request) -> httpx.Response:
    """Generated bodies name arbitrary fhirServer URLs: the FHIR client answers them all with 503."""
    return httpx.Response(503, json={"resourceType": "OperationOutcome", "issue": []})


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> Iterator[Any]:
    """The document as the service publishes it (``/openapi.json``), loaded through ASGI."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield loaded
    finally:  # stop the app's lifespan (schemathesis started it): the audit writer flushes and closes
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_fuzz(spec: Spec, schema: Any) -> None:
    method, path = spec.label.split(" ", 1)
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=spec.mode, path_parameters=spec.path_parameters or None)
    if spec.valid_context:
        strategy = strategy.map(with_valid_context(spec.path_parameters["service_id"]))
    calls = 0

    @seed(SEED)
    @settings(
        max_examples=spec.examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        nonlocal calls
        if path.startswith(NEEDS_AUDIT_TOKEN):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {AUDIT_TOKEN}"}
        response = case.call()
        calls += 1
        case.validate_response(response, checks=CHECKS)

    with contextlib.suppress(Unsatisfiable):  # nothing of the operation can be generated in this mode
        fuzz()
    COUNTS["cases fuzzed"] += calls
    assert calls >= spec.floor, f"only {calls} cases generated for {spec.id}"


def test_discovery_documents_the_401_it_answers_to_a_bad_token(app: FastAPI) -> None:
    assert "401" in app.openapi()["paths"]["/cds-services"]["get"]["responses"]


def test_metrics_documents_the_401_it_answers_without_its_token(app: FastAPI) -> None:
    assert "401" in app.openapi()["paths"]["/metrics"]["get"]["responses"]
