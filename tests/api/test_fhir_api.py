"""``/fhir``: a read-only FHIR R4 server of the artefacts, answering as FHIR clients expect
(``application/fhir+json``, searchset Bundles, OperationOutcome errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.artefacts.common import SITE_CODE, canonical, validate
from cds_service.main import create_app
from tests.conftest import make_settings
from tests.support import NOW

FHIR_JSON = "application/fhir+json"

VALUE_SETS = len(list((Path(__file__).resolve().parents[2] / "rules" / "valuesets").glob("*.yaml")))


def get(client: TestClient, path: str, status: int = 200, **params: str) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == FHIR_JSON
    body: dict[str, Any] = response.json()
    return body


def test_metadata_lists_what_is_served(client: TestClient) -> None:
    statement = get(client, "/fhir/metadata")
    validate(statement)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {"ValueSet", "PlanDefinition", "ActivityDefinition"}
    assert {"url", "name", "_id"} <= {p["name"] for p in resources["ValueSet"]["searchParam"]}
    assert resources["ValueSet"]["operation"][0]["name"] == "expand"
    assert resources["ValueSet"]["documentation"] == f"{VALUE_SETS} resources."


def test_value_set_search_returns_a_searchset_of_every_value_set(client: TestClient) -> None:
    bundle = get(client, "/fhir/ValueSet")
    validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"]) >= 60
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"http://testserver/fhir/ValueSet/{entry['resource']['id']}"
    assert entry["search"] == {"mode": "match"}
    assert all(
        "compose" in e["resource"] or e["resource"]["id"] == "unable-to-bear-weight" for e in bundle["entry"]
    )
    assert all("expansion" in e["resource"] for e in bundle["entry"])
    assert bundle["link"] == [{"relation": "self", "url": "http://testserver/fhir/ValueSet"}]


def test_value_sets_are_searched_by_url_and_name(client: TestClient) -> None:
    url = canonical("ValueSet", "hip-oa")
    assert [e["resource"]["id"] for e in get(client, "/fhir/ValueSet", url=url)["entry"]] == ["hip-oa"]
    assert get(client, "/fhir/ValueSet", url=url + "x")["total"] == 0
    starts = {e["resource"]["name"] for e in get(client, "/fhir/ValueSet", name="hip")["entry"]}
    assert "HipOa" in starts and all(n.startswith("Hip") for n in starts)
    assert get(client, "/fhir/ValueSet", **{"name:exact": "hipoa"})["total"] == 0
    assert get(client, "/fhir/ValueSet", **{"name:exact": "HipOa"})["total"] == 1
    contains = {
        e["resource"]["id"] for e in get(client, "/fhir/ValueSet", **{"name:contains": "weakness"})["entry"]
    }
    assert contains == {
        "hip-weakness-finding",
        "core-weakness",
        "bilateral-leg-weakness",
        "weakness-progression",
    }
    either = get(client, "/fhir/ValueSet", _id="hip-oa,knee-pain")
    assert either["total"] == 2
    counted = get(client, "/fhir/ValueSet", _summary="count")
    assert counted["total"] >= 60 and "entry" not in counted


@pytest.mark.parametrize(
    ("params", "named"),
    [({"code": "x"}, "code"), ({"name:missing": "true"}, "name:missing"), ({"_summary": "true"}, "_summary")],
)
def test_an_unsupported_search_is_a_400_outcome_naming_it(
    client: TestClient, params: dict[str, str], named: str
) -> None:
    outcome = get(client, "/fhir/ValueSet", 400, **params)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-supported"
    assert outcome["issue"][0]["expression"] == [named]


def test_one_value_set_and_an_unknown_one(client: TestClient) -> None:
    resource = get(client, "/fhir/ValueSet/recent-trauma")
    validate(resource)
    filters = [f["value"] for i in resource["compose"]["include"] for f in i.get("filter", [])]
    assert r"S72(\.[A-Z0-9]{1,3}|\.[A-Z0-9]{3}[ABC])?" in filters
    outcome = get(client, "/fhir/ValueSet/no-such-set", 404)
    assert outcome["issue"][0]["code"] == "not-found"
    assert "no-such-set" in outcome["issue"][0]["diagnostics"]


def test_expand_returns_the_expansion(client: TestClient) -> None:
    expanded = get(client, "/fhir/ValueSet/hip-weakness-finding/$expand")
    validate(expanded)
    assert "compose" not in expanded and expanded["expansion"]["total"] == 13
    with_definition = get(client, "/fhir/ValueSet/hip-weakness-finding/$expand", includeDefinition="true")
    assert "compose" in with_definition
    by_url = get(
        client, "/fhir/ValueSet/$expand", url=canonical("ValueSet", "hip-weakness-finding") + "|1.0.0"
    )
    assert by_url == expanded
    assert get(client, "/fhir/ValueSet/$expand", 404, url=canonical("ValueSet", "nope"))["resourceType"] == (
        "OperationOutcome"
    )
    assert get(client, "/fhir/ValueSet/$expand", 400)["issue"][0]["expression"] == ["url"]
    assert get(client, "/fhir/ValueSet/hip-oa/$expand", 400, filter="x")["issue"][0]["expression"] == [
        "filter"
    ]


def test_plan_definitions_and_the_orders_they_suggest_resolve(client: TestClient) -> None:
    bundle = get(client, "/fhir/PlanDefinition")
    assert [e["resource"]["id"] for e in bundle["entry"]] == [
        "hip-weakness",
        "hip-weakness-order-select",
        "hip-weakness-order-sign",
    ]
    plan = get(client, "/fhir/PlanDefinition/hip-weakness")
    validate(plan)
    assert len(plan["action"]) == 31
    canonicals = {
        a["definitionCanonical"]
        for action in plan["action"]
        for a in [action, *action.get("action", [])]
        if "definitionCanonical" in a
    }
    for url in canonicals:
        found = get(client, "/fhir/ActivityDefinition", url=url)
        assert found["total"] == 1, url
        validate(found["entry"][0]["resource"])
    assert get(client, "/fhir/ActivityDefinition")["total"] == 10
    assert get(client, "/fhir/PlanDefinition/nope", 404)["resourceType"] == "OperationOutcome"
    assert get(client, "/fhir/ActivityDefinition/nope", 404)["resourceType"] == "OperationOutcome"


def test_every_rule_page_the_plans_link_to_is_served(client: TestClient) -> None:
    pages = {
        d["url"]
        for e in get(client, "/fhir/PlanDefinition")["entry"]
        for action in e["resource"]["action"]
        for d in action["documentation"]
        if d["type"] == "documentation"
    }
    assert len(pages) >= 33
    for page in pages:
        assert client.get(page).status_code == 200, page


def test_the_fhir_routes_are_documented_under_their_tag(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    fhir = {p: ops for p, ops in paths.items() if p.startswith("/fhir")}
    assert set(fhir) >= {"/fhir/metadata", "/fhir/ValueSet", "/fhir/ValueSet/{resource_id}/$expand"}
    for operations in fhir.values():
        get_op = operations["get"]
        assert get_op["tags"] == ["FHIR"]
        assert FHIR_JSON in get_op["responses"]["200"]["content"]


def test_a_sites_codes_are_served_marked_local(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "weight-bearing.yaml").write_text(
        yaml.safe_dump(
            {"extends": "unable-to-bear-weight", "codes": [{"system": "sct", "code": "282145008"}]}
        )
    )
    app = create_app(make_settings(tmp_path, extra_valuesets_dir=site), clock=lambda: NOW)
    with TestClient(app) as client:
        resource = get(client, "/fhir/ValueSet/unable-to-bear-weight/$expand")
    assert resource["version"] == "1.0.0+site"
    assert resource["expansion"]["contains"] == [
        {
            "extension": [{"url": SITE_CODE, "valueBoolean": True}],
            "system": "http://snomed.info/sct",
            "code": "282145008",
        }
    ]
