"""FHIR JSON -> records: units by UCUM code, implausible or unit-less values rejected, statuses, shapes."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.catalog import Catalog

TODAY = date(2026, 1, 15)
LOINC = "http://loinc.org"
LOCAL = "http://example.org/fhir/CodeSystem/hip-weakness-cds-local"
SCT = "http://snomed.info/sct"


def temperature(
    value: Any, code: str | None, unit: str | None = None, loinc: str = "8310-5"
) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if code is not None:
        quantity |= {"system": "http://unitsofmeasure.org", "code": code}
    if unit is not None:
        quantity["unit"] = unit
    return {
        "resourceType": "Observation",
        "id": "t",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": "2026-01-14",
        "valueQuantity": quantity,
    }


def normalise(catalog: Catalog, *resources: dict[str, Any]):  # type: ignore[no-untyped-def]
    return catalog.engine.normaliser.normalise(resources, "p1", TODAY)


@pytest.mark.parametrize(
    ("value", "code", "celsius"),
    [
        (38.6, "Cel", 38.6),
        (101.3, "[degF]", 38.5),
        (99.1, "[degF]", 37.3),
        (311.75, "K", 38.6),
        (38, "Cel", 38.0),
    ],
)
def test_temperatures_are_converted_by_ucum_code(
    catalog: Catalog, value: float, code: str, celsius: float
) -> None:
    out = normalise(catalog, temperature(value, code))
    assert not out.unreadable
    assert out.records[0].number == pytest.approx(celsius, abs=0.05)


@pytest.mark.parametrize(
    ("value", "code", "unit", "problem"),
    [
        (385, "Cel", None, "implausible"),
        (101.3, "Cel", None, "implausible"),  # Fahrenheit number labelled Celsius
        (38.5, None, None, "no unit"),
        (38.5, None, "°C", "no UCUM code"),
        (38.5, "mmHg", None, "not a known temperature unit"),
        ("38.5", "Cel", None, "not a number"),
        (True, "Cel", None, "not a number"),
    ],
)
def test_implausible_or_unitless_temperatures_are_unreadable_not_guessed(
    catalog: Catalog, value: Any, code: str | None, unit: str | None, problem: str
) -> None:
    out = normalise(catalog, temperature(value, code, unit))
    assert not out.records
    assert problem in out.unreadable[0].problem
    assert "body-temperature" in out.unreadable[0].valuesets


def test_unit_string_that_is_exactly_a_ucum_code_is_accepted(catalog: Catalog) -> None:
    out = normalise(catalog, temperature(101.3, None, "[degF]"))
    assert out.records[0].number == pytest.approx(38.5, abs=0.05)


@pytest.mark.parametrize(
    ("value", "grade"),
    [
        ({"valueInteger": 3}, 3),
        (
            {
                "valueQuantity": {
                    "value": 2,
                    "unit": "{score}",
                    "system": "http://unitsofmeasure.org",
                    "code": "{score}",
                }
            },
            2,
        ),
        ({"valueQuantity": {"value": 4}}, 4),
        ({"valueCodeableConcept": {"coding": [{"system": LOCAL, "code": "mrc-1"}]}}, 1),
    ],
)
def test_mrc_grade_in_every_representation(catalog: Catalog, value: dict[str, Any], grade: int) -> None:
    obs = {
        "resourceType": "Observation",
        "id": "m",
        "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": "hip-flexion-mrc"}]},
        "effectiveDateTime": "2026-01-14",
        **value,
    }
    assert normalise(catalog, obs).records[0].number == grade


@pytest.mark.parametrize(
    "value",
    [
        {"valueInteger": 7},
        {"valueQuantity": {"value": 3.5}},
        {"valueString": "weak"},
        {"valueCodeableConcept": {"coding": [{"system": LOCAL, "code": "mrc-9"}]}},
    ],
)
def test_impossible_mrc_values_are_unreadable(catalog: Catalog, value: dict[str, Any]) -> None:
    obs = {
        "resourceType": "Observation",
        "id": "m",
        "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": "hip-flexion-mrc"}]},
        **value,
    }
    out = normalise(catalog, obs)
    assert not out.records and out.unreadable


@pytest.mark.parametrize(
    ("clinical", "verification", "kept"),
    [
        ("active", "confirmed", True),
        ("recurrence", None, True),
        (None, None, True),
        ("resolved", None, True),
        ("active", "refuted", False),
        (None, "entered-in-error", False),
        ("active", "provisional", True),
        ("active", "differential", True),
        ("active", "unconfirmed", True),
    ],
)
def test_condition_status_handling(
    catalog: Catalog, clinical: str | None, verification: str | None, kept: bool
) -> None:
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "id": "c",
        "code": {"coding": [{"system": SCT, "code": "192970008"}]},
    }
    if clinical:
        cond["clinicalStatus"] = {"coding": [{"code": clinical}]}
    if verification:
        cond["verificationStatus"] = {"coding": [{"code": verification}]}
    assert bool(normalise(catalog, cond).records) is kept


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", True),
        ("entered-in-error", False),
        ("cancelled", False),
        ("registered", False),
        ("unknown", True),
        (None, True),
    ],
)
def test_observation_status_handling(catalog: Catalog, status: str | None, kept: bool) -> None:
    obs = temperature(39.0, "Cel")
    if status is None:
        del obs["status"]
    else:
        obs["status"] = status
    assert bool(normalise(catalog, obs).records) is kept


def test_code_without_system_is_reported_not_dropped(catalog: Catalog) -> None:
    cond = {
        "resourceType": "Condition",
        "id": "c",
        "code": {"coding": [{"code": "192970008"}], "text": "CES"},
    }
    out = normalise(catalog, cond)
    assert not out.records
    assert out.unreadable[0].code_unknown


def test_unresolvable_medication_reference_is_reported(catalog: Catalog) -> None:
    med = {
        "resourceType": "MedicationRequest",
        "id": "m",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/unknown"},
    }
    out = normalise(catalog, med)
    assert out.unreadable and out.unreadable[0].code_unknown


def test_medication_reference_resolved_from_contained_and_bundle(catalog: Catalog) -> None:
    apixaban = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1364445"}]}
    contained = {
        "resourceType": "MedicationRequest",
        "id": "a",
        "status": "active",
        "intent": "order",
        "contained": [{"resourceType": "Medication", "id": "med1", "code": apixaban}],
        "medicationReference": {"reference": "#med1"},
    }
    separate = {
        "resourceType": "MedicationRequest",
        "id": "b",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/m2"},
    }
    medication = {"resourceType": "Medication", "id": "m2", "code": apixaban}
    out = normalise(catalog, contained, separate, medication)
    assert sorted(r.id or "" for r in out.records) == ["a", "b"]


@pytest.mark.parametrize(
    "bad", [None, 5, "x", [], {"resourceType": 5}, {"resourceType": "Condition", "code": 3}]
)
def test_wrong_shapes_never_raise(catalog: Catalog, bad: Any) -> None:
    normalise(catalog, bad)  # type: ignore[arg-type]
