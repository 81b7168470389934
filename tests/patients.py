"""Every test patient as a hook request, and what an evaluation concludes, for tests that compare two
ways of reading the same patients (fast and full decoding; compiled and interpreted engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from cds_service.catalog import Catalog
from cds_service.engine.evaluate import Evaluation
from cds_service.fixtures import ANCHOR
from cds_service.hookbody import HookBody, decode_hook_body
from cds_service.prefetch.supplied import Supplied
from tests.clinical.test_cases import CASES
from tests.support import (
    FIXTURES,
    bundle_resources,
    case_request,
    hook_request,
    vignette_bundle,
    vignette_expectations,
)

SYNTHEA = sorted((FIXTURES / "synthea").glob("*.json"))


def every_test_patient() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, hook request) for every public vignette, every own clinical case and every Synthea patient."""
    for case_id, expected in sorted(vignette_expectations()["cases"].items()):
        yield case_id, hook_request(bundle_resources(vignette_bundle(case_id)), expected["patient"])
    for param in CASES:
        (case,) = param.values
        yield str(param.id), case_request(case)
    for path in SYNTHEA:
        resources = bundle_resources(orjson.loads(path.read_bytes()))
        patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        yield Path(path).stem[:24], hook_request(resources, patient)


def summary(evaluation: Evaluation) -> dict[str, Any]:
    """Everything a card or the audit trail is built from."""
    return {
        "hip_weakness": evaluation.hip_weakness,
        "red_flag": evaluation.red_flag,
        "results": [
            (r.rule.id, r.matched, r.fired, sorted(str(e.ref()) for e in r.evidence), r.leaves)
            for r in evaluation.results
        ],
        "categories": {c: [r.rule.id for r in rs] for c, rs in evaluation.categories.items()},
        "notes": evaluation.notes,
        "unreadable": evaluation.unreadable,
    }


def resources_of(body: HookBody) -> list[dict[str, Any]]:
    """The prefetched resources of a decoded hook body (every key answered)."""
    out: list[dict[str, Any]] = []
    for value in (body.prefetch or {}).values():
        assert not isinstance(value, Exception), value
        if isinstance(value, Supplied):
            out.extend(value.resources)
    return out


def work_up(catalog: Catalog) -> list[str]:
    """The pathways the patient-view service emits cards for (every one but order checks)."""
    return list(next(s.emit_pathways for s in catalog.services if s.hook == "patient-view"))


def evaluate(catalog: Catalog, request_body: dict[str, Any]) -> Evaluation:
    """Decode and evaluate a hook request as the patient-view service does, on the fixture anchor date."""
    engine = catalog.engine
    body = decode_hook_body(orjson.dumps(request_body), engine.normaliser.worth_reading)
    patient = request_body["context"]["patientId"]
    return engine.evaluate(resources_of(body), patient, ANCHOR, work_up(catalog))
