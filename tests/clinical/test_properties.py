"""Safety properties of the engine, checked over generated variations of real vignettes (Hypothesis).

- Adding refuted or entered-in-error resources, whatever their codes, never adds a red flag.
- Adding resources about another patient never changes the answer.
- Adding irrelevant data (codes in no value set) never changes the answer.
- Moving the whole record and "today" by the same number of days never changes the answer.
- Spelling a code system with any of its aliases never changes the answer.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.catalog import Catalog
from cds_service.fixtures import ANCHOR, shift_dates
from tests.support import bundle_resources, vignette_bundle, vignette_expectations

CASES = sorted(vignette_expectations()["cases"])
EXPECTED = vignette_expectations()["cases"]
RED_FLAG_CODES = [
    ("http://snomed.info/sct", "192970008"),  # cauda equina syndrome
    ("http://snomed.info/sct", "267064002"),  # retention of urine
    ("http://hl7.org/fhir/sid/icd-10-cm", "C61"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "S72.001A"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "R50.9"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "K68.3"),
    ("http://snomed.info/sct", "63627007"),
    ("http://snomed.info/sct", "448765001"),
]
ALIASES = {
    "http://snomed.info/sct": ["urn:oid:2.16.840.1.113883.6.96", "http://snomed.info/sct/731000124108"],
    "http://hl7.org/fhir/sid/icd-10-cm": ["urn:oid:2.16.840.1.113883.6.90"],
    "http://loinc.org": ["urn:oid:2.16.840.1.113883.6.1"],
    "http://www.nlm.nih.gov/research/umls/rxnorm": ["urn:oid:2.16.840.1.113883.6.88"],
}
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def answer(catalog: Catalog, resources: list[dict[str, Any]], patient: str, days: int = 0) -> tuple[Any, ...]:
    service = catalog.service("hip-weakness")
    evaluation = catalog.engine.evaluate(
        resources, patient, ANCHOR + timedelta(days=days), service.emit_pathways
    )
    return evaluation.red_flag, tuple(evaluation.categories)


def case(case_id: str) -> tuple[list[dict[str, Any]], str]:
    return bundle_resources(vignette_bundle(case_id)), EXPECTED[case_id]["patient"]


@SETTINGS
@given(
    case_id=st.sampled_from(CASES),
    code=st.sampled_from(RED_FLAG_CODES),
    status=st.sampled_from(["refuted", "entered-in-error"]),
    onset=st.integers(0, 30),
)
def test_refuted_or_entered_in_error_never_adds_a_red_flag(
    catalog: Catalog, case_id: str, code: tuple[str, str], status: str, onset: int
) -> None:
    resources, patient = case(case_id)
    before = answer(catalog, resources, patient)
    noise = {
        "resourceType": "Condition",
        "id": "noise",
        "verificationStatus": {"coding": [{"code": status}]},
        "code": {"coding": [{"system": code[0], "code": code[1]}]},
        "subject": {"reference": f"Patient/{patient}"},
        "onsetDateTime": (ANCHOR - timedelta(days=onset)).isoformat(),
    }
    after = answer(catalog, [*resources, noise], patient)
    assert after == before


@SETTINGS
@given(case_id=st.sampled_from(CASES), other=st.sampled_from(CASES))
def test_another_patients_resources_never_change_the_answer(
    catalog: Catalog, case_id: str, other: str
) -> None:
    resources, patient = case(case_id)
    theirs, their_id = case(other)
    if their_id == patient:
        return
    foreign = [r for r in theirs if r["resourceType"] != "Patient"]
    assert answer(catalog, [*resources, *foreign], patient) == answer(catalog, resources, patient)


@SETTINGS
@given(
    case_id=st.sampled_from(CASES), codes=st.lists(st.from_regex(r"[0-9]{5,9}", fullmatch=True), max_size=20)
)
def test_irrelevant_observations_never_change_the_answer(
    catalog: Catalog, case_id: str, codes: list[str]
) -> None:
    resources, patient = case(case_id)
    noise = [
        {
            "resourceType": "Observation",
            "id": f"n{i}",
            "status": "final",
            "code": {"coding": [{"system": "http://example.org/unrelated", "code": c}]},
            "valueQuantity": {"value": 1.0, "unit": "mg"},
            "subject": {"reference": f"Patient/{patient}"},
        }
        for i, c in enumerate(codes)
    ]
    assert answer(catalog, [*resources, *noise], patient) == answer(catalog, resources, patient)


@SETTINGS
@given(case_id=st.sampled_from(CASES), days=st.integers(-3000, 3000))
def test_moving_record_and_today_together_never_changes_the_answer(
    catalog: Catalog, case_id: str, days: int
) -> None:
    resources, patient = case(case_id)
    moved = shift_dates(resources, days)
    assert answer(catalog, moved, patient, days) == answer(catalog, resources, patient)


@SETTINGS
@given(case_id=st.sampled_from(CASES), pick=st.integers(0, 1))
def test_code_system_aliases_never_change_the_answer(catalog: Catalog, case_id: str, pick: int) -> None:
    resources, patient = case(case_id)
    aliased = copy.deepcopy(resources)

    def respell(value: Any) -> None:
        if isinstance(value, dict):
            system = value.get("system")
            if isinstance(system, str) and system in ALIASES:
                options = ALIASES[system]
                value["system"] = options[min(pick, len(options) - 1)]
            for member in value.values():
                respell(member)
        elif isinstance(value, list):
            for member in value:
                respell(member)

    respell(aliased)
    assert answer(catalog, aliased, patient) == answer(catalog, resources, patient)
