"""What the engine cannot read is said on the highest card when it could hide a red flag (knowledge §4.4,
safety notes S5, S6); undated active Conditions count as current for red flags and say "date unknown"."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support import SERVICE, case_request, categories, highest_indicator

SCT, ICD, LOINC = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://loinc.org"
LOCAL = "http://example.org/fhir/CodeSystem/hip-weakness-cds-local"
STRAIN = {
    "type": "Condition",
    "system": ICD,
    "code": "S76.011A",
    "display": "Strain of right hip",
    "clinicalStatus": "active",
    "verificationStatus": "confirmed",
    "onset": "T-4d",
}
WEAKNESS = {
    "type": "Condition",
    "system": SCT,
    "code": "26544005",
    "display": "Muscle weakness (finding)",
    "clinicalStatus": "active",
    "verificationStatus": "confirmed",
    "onset": "T-4d",
}


def call(client: TestClient, *resources: dict[str, Any]) -> dict[str, Any]:
    case = {"id": "dq", "patient": {"gender": "female", "ageYears": 30}, "resources": list(resources)}
    response = client.post(f"/cds-services/{SERVICE}", json=case_request(case))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def temperature(
    value: float | None, code: str | None, effective: str | None = "T-1d", **fhir: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "Observation",
        "system": LOINC,
        "code": "8310-5",
        "display": "Body temperature",
        "status": "final",
        "value": {"quantity": {"value": value, "unit": code, "code": code}},
    }
    if effective:
        spec["effective"] = effective
    if fhir:
        spec["fhir"] = fhir
    return spec


def test_undated_fever_does_not_fire_but_is_reported_on_the_card(client: TestClient) -> None:
    data = call(client, WEAKNESS, STRAIN, temperature(38.9, "Cel", effective=None))
    assert categories(data) == ["physiotherapy"]
    assert highest_indicator(data) == "info"
    detail = data["cards"][0]["detail"]
    assert "38.9" in detail and "no date" in detail and "please verify" in detail


def test_implausible_temperature_is_rejected_and_reported(client: TestClient) -> None:
    data = call(client, WEAKNESS, STRAIN, temperature(385, "Cel"))
    assert categories(data) == ["physiotherapy"]
    assert "implausible" in data["cards"][0]["detail"]


def test_temperature_without_a_unit_is_rejected_and_reported(client: TestClient) -> None:
    data = call(client, WEAKNESS, STRAIN, temperature(None, None, valueQuantity={"value": 39.4}))
    assert categories(data) == ["physiotherapy"]
    assert "no unit" in data["cards"][0]["detail"]


def test_fahrenheit_fever_fires_and_fahrenheit_normal_does_not(client: TestClient) -> None:
    assert categories(call(client, WEAKNESS, STRAIN, temperature(100.6, "[degF]")))[0] == "urgent-referral"
    assert categories(call(client, WEAKNESS, STRAIN, temperature(100.2, "[degF]"))) == ["physiotherapy"]


def test_undated_active_red_flag_condition_counts_as_current_and_says_so(client: TestClient) -> None:
    retention = {
        "type": "Condition",
        "system": SCT,
        "code": "267064002",
        "display": "Retention of urine",
        "clinicalStatus": "active",
        "verificationStatus": "unconfirmed",
    }
    data = call(client, WEAKNESS, STRAIN, retention)
    assert categories(data) == ["urgent-referral"]
    assert "date unknown" in data["cards"][0]["detail"]


def test_stopped_anticoagulant_with_unknown_end_is_not_counted_but_reported(client: TestClient) -> None:
    warfarin = {
        "type": "MedicationRequest",
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "855332",
        "display": "warfarin sodium 5 MG Oral Tablet",
        "status": "stopped",
        "authoredOn": "T-60d",
    }
    data = call(client, WEAKNESS, STRAIN, warfarin)
    assert categories(data) == ["physiotherapy"]
    assert "end date unknown" in data["cards"][0]["detail"]


def test_recently_stopped_anticoagulant_still_counts(client: TestClient) -> None:
    warfarin = {
        "type": "MedicationRequest",
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "855332",
        "display": "warfarin sodium 5 MG Oral Tablet",
        "status": "stopped",
        "authoredOn": "T-60d",
        "validityEnd": "T-3d",
    }
    assert categories(call(client, WEAKNESS, STRAIN, warfarin))[0] == "urgent-referral"


def test_medication_that_cannot_be_resolved_is_reported(client: TestClient) -> None:
    med = {
        "type": "MedicationRequest",
        "system": "x",
        "code": "x",
        "display": "x",
        "status": "active",
        "fhir": {"medicationCodeableConcept": None, "medicationReference": {"reference": "Medication/gone"}},
    }
    detail = call(client, WEAKNESS, STRAIN, med)["cards"][0]["detail"]
    assert "medicationReference could not be resolved" in detail


def test_a_condition_or_drug_coded_only_in_a_local_system_is_reported_and_a_local_observation_is_not(
    client: TestClient,
) -> None:
    local = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696871"  # an EHR's own problem-list / formulary codes
    fracture = {**STRAIN, "system": local, "code": "12345", "display": "Fractured neck of femur"}
    drug = {
        "type": "MedicationRequest",
        "system": local,
        "code": "67890",
        "display": "Blood thinner (local formulary)",
        "status": "active",
    }
    flowsheet = {
        "type": "Observation",
        "system": local,
        "code": "3040",
        "display": "Pain goal",
        "status": "final",
    }
    detail = call(client, WEAKNESS, STRAIN, fracture, drug, flowsheet)["cards"][0]["detail"]
    assert "Fractured neck of femur: coded only in a code system the rules do not use" in detail
    assert "Blood thinner (local formulary): coded only" in detail
    assert "Pain goal" not in detail


def test_a_free_text_answer_that_turns_is_not_read_as_negative_but_reported(client: TestClient) -> None:
    answer = {
        "type": "Observation",
        "system": SCT,
        "code": "165232002",
        "display": "Urinary incontinence",
        "status": "final",
        "value": {"string": "Denies bowel change but new urinary incontinence since last night"},
        "effective": "T-1d",
    }
    detail = call(client, WEAKNESS, answer)["cards"][0]["detail"]
    assert "Urinary incontinence: value cannot be interpreted as present or absent" in detail


def test_notes_go_on_the_highest_card_only(client: TestClient) -> None:
    radiculopathy = {
        "type": "Condition",
        "system": ICD,
        "code": "M54.16",
        "display": "Radiculopathy, lumbar",
        "clinicalStatus": "active",
        "verificationStatus": "confirmed",
        "onset": "T-3w",
    }
    data = call(client, WEAKNESS, STRAIN, radiculopathy, temperature(39.4, "Cel", effective=None))
    assert categories(data) == ["mri-lumbar-spine", "physiotherapy"]
    assert "please verify" in data["cards"][0]["detail"]
    assert "please verify" not in data["cards"][1]["detail"]


def test_free_text_in_ehr_data_cannot_inject_markdown_or_html(client: TestClient) -> None:
    weakness = dict(WEAKNESS, text="<script>alert(1)</script> **bold** [link](http://x)")
    detail = call(client, weakness, STRAIN)["cards"][0]["detail"]
    assert "<script>" not in detail and "](http://x)" not in detail
