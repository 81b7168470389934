"""order-select / order-sign: physiotherapy drafted despite a red flag (critical); lumbar MRI drafted with
no red flag and no neurological finding (info, imaging guidance); silence otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import bundle_resources, categories, hook_request, vignette_bundle

PHYSIO = {
    "system": "http://snomed.info/sct",
    "code": "306170007",
    "display": "Referral to physiotherapy service",
}
MRI = {"system": "http://loinc.org", "code": "30679-5", "display": "MR Lumbar spine WO contrast"}
OTHER = {"system": "http://loinc.org", "code": "24762-7", "display": "XR Hip Views"}
CPT = "http://www.ama-assn.org/go/cpt"
CT = {"system": CPT, "code": "72131", "display": "CT lumbar spine w/o dye"}
XR_2_3 = {"system": CPT, "code": "72100", "display": "X-ray exam l-s spine 2/3 vws"}
XR_4 = {"system": CPT, "code": "72110", "display": "X-ray exam l-2 spine 4/>vws"}
CT_SCT = {"system": "http://snomed.info/sct", "code": "572091000119106"}
ED_REFERRAL = {"system": "http://snomed.info/sct", "code": "306254002", "display": "Referral to A&E doctor"}


def draft(rid: str, coding: dict[str, str], patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def order_call(
    client: TestClient,
    case: str,
    hook: str,
    drafts: list[dict[str, Any]],
    selections: list[str] | None = None,
) -> dict[str, Any]:
    patient = f"hw-{case.lower()}"
    context: dict[str, Any] = {
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": d} for d in drafts],
        }
    }
    if hook == "order-select":
        context["selections"] = selections or [f"ServiceRequest/{drafts[0]['id']}"]
    body = hook_request(bundle_resources(vignette_bundle(case)), patient, hook=hook, extra_context=context)
    response = client.post(f"/cds-services/hip-weakness-{hook}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_physiotherapy_drafted_with_a_red_flag_is_critical(client: TestClient, hook: str) -> None:
    data = order_call(client, "V01", hook, [draft("pt1", PHYSIO, "hw-v01")])
    assert categories(data) == ["urgent-referral"]
    card = data["cards"][0]
    assert card["indicator"] == "critical"
    actions = [s["actions"][0] for s in card["suggestions"]]
    assert {"type": "delete", "resourceId": "ServiceRequest/pt1"}.items() <= next(
        a for a in actions if a["type"] == "delete"
    ).items()
    assert any(a["type"] == "create" and a["resource"]["priority"] == "stat" for a in actions)
    assert "Retention of urine" in card["detail"]  # which red flag: its findings are listed


@pytest.mark.parametrize("rid", [None, "x" * 65])  # a urn:uuid draft with no id; an id FHIR does not allow
def test_a_draft_that_cannot_be_named_still_gets_the_critical_card(
    client: TestClient, rid: str | None
) -> None:
    unnamed = draft("unused", PHYSIO, "hw-v01")
    if rid is None:
        del unnamed["id"]
    else:
        unnamed["id"] = rid
    context = {
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": "urn:uuid:0b1c6a3e-5d7f-4c35-9a51-2b8f4d6e7a10", "resource": unnamed}],
        }
    }
    body = hook_request(
        bundle_resources(vignette_bundle("V01")), "hw-v01", hook="order-sign", extra_context=context
    )
    response = client.post("/cds-services/hip-weakness-order-sign", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert categories(data) == ["urgent-referral"]
    actions = [s["actions"][0] for s in data["cards"][0]["suggestions"]]
    assert actions and all(a["type"] == "create" for a in actions)  # no delete without a resourceId


def test_order_select_only_looks_at_the_newly_selected_orders(client: TestClient) -> None:
    drafts = [draft("pt1", PHYSIO, "hw-v01"), draft("xr1", OTHER, "hw-v01")]
    assert order_call(client, "V01", "order-select", drafts, ["ServiceRequest/xr1"]) == {"cards": []}


def test_physiotherapy_without_a_red_flag_is_silent(client: TestClient) -> None:
    assert order_call(client, "V33", "order-sign", [draft("pt1", PHYSIO, "hw-v33")]) == {"cards": []}


def test_lumbar_mri_without_red_flag_or_neurological_finding_gets_the_imaging_guidance(
    client: TestClient,
) -> None:
    data = order_call(client, "V33", "order-sign", [draft("mri1", MRI, "hw-v33")])  # hip OA
    assert categories(data) == ["mri-lumbar-spine"]
    card = data["cards"][0]
    assert card["indicator"] == "info"
    assert "NICE NG59" in card["detail"]
    assert card["source"]["url"] == "https://www.nice.org.uk/guidance/ng59/chapter/Recommendations"
    # The card questions the order: it must not also advise an MRI or offer to order one.
    assert "check the indication" in card["summary"] and "advised" not in card["summary"]
    assert not card.get("suggestions")


@pytest.mark.parametrize("drafted", [[], [("mri1", MRI)], [("pt1", PHYSIO), ("mri1", MRI)]])
def test_no_hip_weakness_no_card_even_with_red_flag_data_and_a_lumbar_mri_drafted(
    client: TestClient, drafted: list[tuple[str, dict[str, str]]]
) -> None:
    """Knowledge §5.5: without hip weakness there are no cards at all. V46 has none; with retention and
    saddle numbness added, an "imaging not indicated" card would argue against an emergency MRI."""
    extra = [
        {
            "resourceType": "Condition",
            "id": f"ces-{n}",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "subject": {"reference": "Patient/hw-v46"},
            "onsetDateTime": "2026-01-14",
        }
        for n, code in enumerate(("267064002", "449813001"))
    ]
    drafts = [draft(rid, coding, "hw-v46") for rid, coding in drafted] or [draft("x", OTHER, "hw-v46")]
    context = {
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": d} for d in drafts],
        }
    }
    for hook in ("order-select", "order-sign"):
        if hook == "order-select":
            context["selections"] = [f"ServiceRequest/{d['id']}" for d in drafts]
        body = hook_request(
            [*bundle_resources(vignette_bundle("V46")), *extra], "hw-v46", hook=hook, extra_context=context
        )
        response = client.post(f"/cds-services/hip-weakness-{hook}", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"cards": []}, hook


@pytest.mark.parametrize("case", ["V27", "V01"])  # radiculopathy; cauda equina
def test_lumbar_mri_with_neurological_finding_or_red_flag_is_silent(client: TestClient, case: str) -> None:
    assert order_call(client, case, "order-sign", [draft("mri1", MRI, f"hw-{case.lower()}")]) == {"cards": []}


def test_unrelated_draft_orders_are_silent(client: TestClient) -> None:
    assert order_call(client, "V01", "order-sign", [draft("xr1", OTHER, "hw-v01")]) == {"cards": []}


def test_order_select_without_selections_is_400(client: TestClient) -> None:
    body = hook_request(
        bundle_resources(vignette_bundle("V01")),
        "hw-v01",
        hook="order-select",
        extra_context={"draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": []}},
    )
    response = client.post("/cds-services/hip-weakness-order-select", json=body)
    assert response.status_code == 400
    assert "context.selections" in response.text


def test_draft_orders_that_are_not_a_bundle_is_400(client: TestClient) -> None:
    body = hook_request(
        bundle_resources(vignette_bundle("V01")),
        "hw-v01",
        hook="order-sign",
        extra_context={"draftOrders": [{"resourceType": "ServiceRequest"}]},
    )
    assert client.post("/cds-services/hip-weakness-order-sign", json=body).status_code == 400


@pytest.mark.parametrize(
    ("coding", "modality"),
    [(MRI, "MRI"), (CT, "CT"), (XR_2_3, "radiograph"), (XR_4, "radiograph"), (CT_SCT, "CT")],
)
@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_lumbar_imaging_of_every_modality_gets_the_guidance_naming_the_modality(
    client: TestClient, coding: dict[str, str], modality: str, hook: str
) -> None:
    """A lumbar CT or X-ray drafted for a patient with no red flag and no neurological finding got no
    card while the same patient's lumbar MRI got the imaging guidance: the value set held MRI codes only."""
    data = order_call(client, "V33", hook, [draft("img1", coding, "hw-v33")])
    assert categories(data) == ["mri-lumbar-spine"]
    card = data["cards"][0]
    assert card["indicator"] == "info"
    assert card["summary"].startswith(f"Lumbar spine {modality} ordered with no red flag")
    assert "check the indication" in card["summary"]
    assert "MRI of the lumbar spine without contrast" not in card["detail"]  # the category's advice
    assert not card.get("suggestions")


def test_several_modalities_drafted_are_all_named(client: TestClient) -> None:
    data = order_call(client, "V33", "order-sign", [draft("a", CT, "hw-v33"), draft("b", XR_2_3, "hw-v33")])
    assert data["cards"][0]["summary"].startswith("Lumbar spine CT and radiograph ordered")


@pytest.mark.parametrize("case", ["V27", "V01"])
def test_lumbar_ct_or_radiograph_with_neurological_finding_or_red_flag_is_silent(
    client: TestClient, case: str
) -> None:
    drafts = [draft("ct1", CT, f"hw-{case.lower()}"), draft("xr1", XR_4, f"hw-{case.lower()}")]
    assert order_call(client, case, "order-sign", drafts) == {"cards": []}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_an_emergency_referral_already_drafted_is_not_suggested_again(client: TestClient, hook: str) -> None:
    """Physiotherapy drafted next to a red flag: the critical card suggested creating an emergency
    referral although one was already among the draft orders."""
    without = order_call(client, "V01", hook, [draft("pt1", PHYSIO, "hw-v01")])["cards"][0]
    assert "Refer for same-day emergency assessment" in [s["label"] for s in without["suggestions"]]
    drafts = [draft("pt1", PHYSIO, "hw-v01"), draft("ed1", ED_REFERRAL, "hw-v01")]
    card = order_call(client, "V01", hook, drafts, ["ServiceRequest/pt1"])["cards"][0]
    assert card["indicator"] == "critical"
    labels = [s["label"] for s in card["suggestions"]]
    assert "Refer for same-day emergency assessment" not in labels
    assert any(label.startswith("Remove the drafted order") for label in labels)
