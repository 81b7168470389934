"""The FHIR knowledge artefacts describe the catalog that runs: one PlanDefinition per service, one action
per rule, every order and value set, all valid FHIR R4 (fhir.resources R4B)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.artefacts import FhirArtefacts, Links, build_artefacts
from cds_service.artefacts.actions import PRIORITY
from cds_service.artefacts.activities import suggested_orders
from cds_service.artefacts.common import (
    CDS_HOOKS_ENDPOINT,
    CDS_HOOKS_PROFILE,
    FHIR_QUERY_PATTERN,
    RULE_LANGUAGE,
    RULE_SYSTEM,
    canonical,
    validate,
)
from cds_service.artefacts.plans import members
from cds_service.catalog import Catalog
from cds_service.engine.model import RuleFile

GENERATED = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)

VALUE_SETS = len(list((Path(__file__).resolve().parents[2] / "rules" / "valuesets").glob("*.yaml")))


@pytest.fixture(scope="module")
def artefacts(catalog: Catalog) -> FhirArtefacts:
    return build_artefacts(catalog, Links("https://cds.example.org"), GENERATED)


def plans(artefacts: FhirArtefacts) -> dict[str, Mapping[str, Any]]:
    return {str(p["id"]): p for p in artefacts.of_type("PlanDefinition")}


def empty_values(value: Any, where: str = "") -> Iterator[str]:
    """FHIR JSON forbids empty arrays, objects and strings (fhir.resources accepts some of them)."""
    if value in ([], {}, ""):
        yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from empty_values(item, f"{where}.{key}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from empty_values(item, f"{where}[{i}]")


def test_every_resource_is_valid_fhir_r4b_with_no_empty_values(artefacts: FhirArtefacts) -> None:
    for resource in [*artefacts.resources.values(), artefacts.capability]:
        validate(resource)
        assert list(empty_values(resource)) == [], resource["id"]
    assert artefacts.counts() == {"ValueSet": VALUE_SETS, "ActivityDefinition": 10, "PlanDefinition": 3}


def test_an_invalid_resource_is_refused_by_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        validate({"resourceType": "ValueSet", "status": 123})


def test_one_eca_rule_plan_per_service_following_the_cds_hooks_profile(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    found = plans(artefacts)
    assert sorted(found) == sorted(s.id for s in catalog.services)
    for service in catalog.services:
        plan = found[service.id]
        assert plan["type"]["coding"][0]["code"] == "eca-rule"
        assert plan["meta"]["profile"] == [CDS_HOOKS_PROFILE]
        assert plan["extension"] == [
            {"url": CDS_HOOKS_ENDPOINT, "valueUri": f"https://cds.example.org/cds-services/{service.id}"}
        ]
        assert plan["url"] == canonical("PlanDefinition", service.id)
        assert plan["version"] == catalog.version
        for action in plan["action"]:
            assert action["trigger"] == [{"type": "named-event", "name": service.hook}]


def test_each_rule_is_one_action_with_its_id_version_logic_and_evidence(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    seen: set[str] = set()
    for plan in plans(artefacts).values():
        ids = [a["id"] for a in plan["action"]]
        assert len(ids) == len(set(ids)), "one action per rule"
        for action in plan["action"]:
            rule = catalog.rule(action["id"])
            assert rule is not None
            seen.add(rule.id)
            spec = rule.spec
            coding = action["code"][0]["coding"][0]
            assert (coding["system"], coding["code"], coding["version"]) == (
                RULE_SYSTEM,
                spec.id,
                spec.version,
            )
            assert action["title"] == spec.name
            assert action["description"].startswith(spec.logic.strip())
            citations = [d for d in action["documentation"] if d["type"] == "citation"]
            assert [c["display"] for c in citations] == [e.label for e in spec.evidence]
            assert [c.get("url") for c in citations] == [e.url for e in spec.evidence]
            pages = [d["url"] for d in action["documentation"] if d["type"] == "documentation"]
            assert pages == [f"https://cds.example.org/rules/{spec.id}"]
    assert seen == {r.id for r in catalog.rules}
    assert len(seen) >= 33


def test_members_are_the_entry_rule_the_emitted_pathways_and_their_dependencies(catalog: Catalog) -> None:
    services = {s.id: s for s in catalog.services}
    patient_view = dict(members(catalog, services["hip-weakness"]))
    assert patient_view.pop("HW") == "entry"
    assert set(patient_view.values()) == {"card"}
    assert set(patient_view) == {
        r.id for r in catalog.rules if r.spec.pathway != "entry" and r.spec.pathway != "order"
    }
    order_sign = dict(members(catalog, services["hip-weakness-order-sign"]))
    assert {rid for rid, role in order_sign.items() if role == "card"} == {
        "ORD-LSPINE-IMAGING",
        "ORD-PHYSIO-RF",
    }
    assert order_sign["RF-CES"] == "input" and order_sign["H-OA"] == "input"  # via N-UNEXPLAINED
    for service in catalog.services:
        plan = dict(members(catalog, service))
        for rule_id in plan:
            rule = catalog.rule(rule_id)
            assert rule is not None and rule.depends_on <= set(plan), rule_id
        order = [r.id for r in catalog.rules if r.id in plan]
        assert list(plan) == order, "evaluation order"


def test_conditions_carry_the_logic_and_the_rule_tree_as_it_runs(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    for action in plans(artefacts)["hip-weakness"]["action"]:
        rule = catalog.rule(action["id"])
        assert rule is not None
        first, *gate = action["condition"]
        assert first["kind"] == "applicability"
        expression = first["expression"]
        assert expression["language"] == RULE_LANGUAGE
        assert expression["description"] == rule.spec.logic.strip()
        tree = json.loads(expression["expression"])
        rebuilt = RuleFile.model_validate({**rule.spec.model_dump(by_alias=True), "when": tree})
        assert rebuilt == rule.spec, "the expression is the rule's own when tree"
        if rule.id == "HW":
            assert gate == [] and "relatedAction" not in action
        else:
            assert json.loads(gate[0]["expression"]["expression"]) == {"fact": "rule", "rules": ["HW"]}
            assert {"actionId": "HW", "relationship": "after"} in action["relatedAction"]


def test_rule_dependencies_are_related_actions(artefacts: FhirArtefacts) -> None:
    actions = {a["id"]: a for a in plans(artefacts)["hip-weakness-order-select"]["action"]}
    related = {r["actionId"] for r in actions["N-UNEXPLAINED"]["relatedAction"]}
    assert {"RF-CES", "N-DISC", "H-OA", "M-CORE"} <= related
    assert all(r["relationship"] == "after" for r in actions["ORD-PHYSIO-RF"]["relatedAction"])


def test_card_actions_suggest_their_orders_as_activity_definitions(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    activities = {a["url"]: a for a in artefacts.of_type("ActivityDefinition")}
    for plan in plans(artefacts).values():
        for action in plan["action"]:
            rule = catalog.rule(action["id"])
            assert rule is not None
            role = action["code"][1]["coding"][0]["code"]
            sub = action.get("action", [])
            canonicals = [a["definitionCanonical"] for a in [action, *sub] if "definitionCanonical" in a]
            if role != "card":
                assert canonicals == [] and "priority" not in action, rule.id
                continue
            expected = [canonical("ActivityDefinition", o) for o in suggested_orders(catalog, rule.spec)]
            assert canonicals == expected, rule.id
            assert all(c in activities for c in canonicals)
            if len(canonicals) + rule.spec.withdraw_drafts > 1:
                assert action["selectionBehavior"] == "any"
            indicator = rule.spec.indicator or catalog.category(rule.spec.recommends[0]).indicator
            assert action["priority"] == PRIORITY[indicator]
    physio = {a["id"]: a for a in plans(artefacts)["hip-weakness-order-sign"]["action"]}["ORD-PHYSIO-RF"]
    assert [s["type"]["coding"][0]["code"] for s in physio["action"]] == ["create", "remove"]


def test_activity_definitions_are_the_cards_order_templates(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    for order_id, template in catalog.cards.order_templates.items():
        activity = artefacts.read("ActivityDefinition", order_id)
        assert activity["kind"] == "ServiceRequest"
        assert activity["code"] == template["code"]
        assert activity["priority"] == template["priority"]
    rf_ces = artefacts.read("ActivityDefinition", "mri-lumbar-emergency")
    assert "RF-CES" in rf_ces["usage"]


def test_inputs_name_the_value_sets_read_and_the_prefetch_that_fetches_them(artefacts: FhirArtefacts) -> None:
    actions = {a["id"]: a for a in plans(artefacts)["hip-weakness-order-select"]["action"]}
    anticoagulation = actions["RF-AC"]["input"]
    medication = [i for i in anticoagulation if i["type"] == "MedicationRequest"]
    assert medication[0]["codeFilter"][0]["valueSet"].endswith("/ValueSet/anticoagulant-medication")
    assert medication[0]["extension"] == [
        {"url": FHIR_QUERY_PATTERN, "valueString": "MedicationRequest?patient={{context.patientId}}"}
    ]
    drafts = [i for i in actions["ORD-PHYSIO-RF"]["input"] if i["type"] == "ServiceRequest"]
    assert drafts and "extension" not in drafts[0], "draft orders come in the hook context, not a query"
    assert "input" not in actions["N-UNEXPLAINED"], "it reads only other rules"
    valuesets = {r["url"] for r in artefacts.of_type("ValueSet")}
    for plan in plans(artefacts).values():
        for action in plan["action"]:
            for requirement in action.get("input", []):
                assert all(f["valueSet"] in valuesets for f in requirement.get("codeFilter", []))


def test_without_a_public_base_url_links_are_relative(catalog: Catalog) -> None:
    artefacts = build_artefacts(catalog, Links(), GENERATED)
    plan = artefacts.read("PlanDefinition", "hip-weakness")
    assert plan["extension"][0]["valueUri"] == "/cds-services/hip-weakness"
    assert plan["action"][0]["documentation"][-1]["url"] == "/rules/HW"
    assert "url" not in artefacts.capability["implementation"]
