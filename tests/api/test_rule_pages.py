"""The URLs cards link to answer HTML to a browser and JSON to API clients (content negotiation on Accept).

The browser tests (tests/browser/) open these pages in Chromium; these check content and negotiation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from cds_service.config import Settings
from cds_service.main import create_app
from tests.audit.conftest import flush
from tests.conftest import make_settings
from tests.support import NOW, bundle_resources, counter_ids, hook_request, vignette_bundle

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TOKEN = "pages-audit-token-0123456789"


@pytest.fixture
def reviewer(tmp_path: Path) -> Iterator[TestClient]:
    settings: Settings = make_settings(tmp_path, audit_token=SecretStr(TOKEN))
    with TestClient(create_app(settings, clock=lambda: NOW, id_factory=counter_ids())) as client:
        yield client


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html;q=0.5", "text/html;q=0.8, */*"]
)
def test_json_stays_the_default(client: TestClient, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    for url in ("/rules/RF-CES", "/valuesets/ces-diagnosis", "/rules"):
        response = client.get(url, headers=headers)
        assert response.headers["content-type"] == "application/json", (url, accept)


def test_a_browser_gets_the_rule_page_naming_the_rule_and_its_evidence(client: TestClient) -> None:
    response = client.get("/rules/RF-CES", headers=BROWSER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Accept" in response.headers["vary"]
    page = response.text
    assert "<h1>RF-CES: Suspected cauda equina syndrome</h1>" in page
    assert (
        'href="https://girft-interactivepathways.org.uk/cauda-equina-1/ces-pres-primary-comm-3a-1/"' in page
    )
    assert "Version 1.1.0" in page and "Red flags" in page  # version, pathway
    assert 'href="/valuesets/ces-sphincter-saddle"' in page  # each criterion with its value set
    assert "Urgent referral (same-day emergency assessment)" in page  # categories recommended
    assert "<strong>Possible cauda equina syndrome</strong>" in page  # the card text, markdown rendered
    assert "V01: Classic cauda equina" in page  # computed from the fixtures
    assert "Same-day emergency spinal pathway" in page


def test_pages_are_accessible_printable_and_self_contained(client: TestClient) -> None:
    for url in ("/rules/RF-CES", "/valuesets/lumbar-ct-order", "/rules"):
        page = client.get(url, headers=BROWSER).text
        assert '<html lang="en">' in page
        assert 'name="viewport"' in page
        assert "@media print" in page
        assert "<script" not in page
        assert not re.search(r"""(?:src|href)=["'](?:https?:)?//[^"']*\.(?:css|js)""", page)
        assert page.count("<h1>") == 1
    form = client.get("/rules/RF-CES", headers=BROWSER).text
    assert '<label for="audit-token">' in form and 'id="audit-token"' in form


def test_the_value_set_page_lists_codes_with_systems_and_sources(client: TestClient) -> None:
    page = client.get("/valuesets/lumbar-ct-order", headers=BROWSER).text
    assert "<h1>Lumbar spine CT (draft orders)</h1>" in page
    assert (
        "<code>72131</code>" in page
        and "<code>30620-9</code>" in page
        and "<code>572091000119106</code>" in page
    )
    assert 'title="http://loinc.org"' in page and 'title="http://snomed.info/sct"' in page
    assert "[V: XRay Study 2.16.840.1.113883.3.464.1003.198.12.1034]" in page
    assert 'href="https://webhooks.codingahead.com/cpt/codes/72131' in page or "codingahead" in page
    assert 'href="/rules/ORD-LSPINE-IMAGING"' in page


def test_the_index_lists_every_rule_by_pathway(client: TestClient) -> None:
    page = client.get("/rules", headers=BROWSER).text
    rules = client.get("/rules").json()["rules"]
    for rule in rules:
        assert f'href="/rules/{rule["id"]}"' in page
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    assert headings[:2] == ["Entry criterion (hip weakness)", "Red flags"]
    assert "Order checks (order-select, order-sign)" in headings


def test_unknown_rule_or_value_set_is_404_for_a_browser_too(client: TestClient) -> None:
    assert client.get("/rules/NOPE", headers=BROWSER).status_code == 404
    assert client.get("/valuesets/nope", headers=BROWSER).status_code == 404


def test_the_audit_token_shows_how_often_the_rule_fired_and_was_overridden(reviewer: TestClient) -> None:
    body = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")
    card = reviewer.post("/cds-services/hip-weakness", json=body).json()["cards"][0]
    reason = card["overrideReasons"][0]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": reason["system"], "code": reason["code"]}},
                "outcomeTimestamp": "2026-01-15T12:05:00Z",
            }
        ]
    }
    assert reviewer.post("/cds-services/hip-weakness/feedback", json=feedback).status_code == 200
    flush(reviewer)

    anonymous = reviewer.get("/rules/RF-CES", headers=BROWSER).text
    assert "Fired" not in anonymous and "For holders of the audit token." in anonymous

    page = reviewer.post("/rules/RF-CES", data={"audit_token": TOKEN}, headers=BROWSER).text
    cells = re.findall(r"<td>(\d+)</td>", page)
    assert cells == ["1", "1", "0", "1"]  # fired, cards, accepted, overridden
    assert f"{reason['display']}: 1 card" in page
    assert TOKEN not in page

    by_header = reviewer.get("/rules/RF-CES", headers={**BROWSER, "Authorization": f"Bearer {TOKEN}"}).text
    assert re.findall(r"<td>(\d+)</td>", by_header) == cells

    wrong = reviewer.post("/rules/RF-CES", data={"audit_token": "guess"}, headers=BROWSER).text
    assert "That is not the audit token." in wrong and "<td>" not in wrong


def test_example_patients_are_computed_once_from_the_fixtures(client: TestClient) -> None:
    examples = client.app.state.cds.examples  # type: ignore[attr-defined]
    first = examples.by_rule()
    assert {e.case for e in first["RF-CES"]} >= {"V01"}
    assert "ORD-LSPINE-IMAGING" not in first  # order checks need draft orders: none in the vignettes
    assert examples.by_rule() is first
