"""/docs and /redoc work on a network without internet access, and every documented example runs any day.

The browser tests (tests/browser/) render the pages in Chromium; these check the wiring without one.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from cds_service.config import Settings
from cds_service.main import create_app
from tests.support import FIXTURES, NOW, counter_ids

EXTERNAL = re.compile(r"""(?:src|href)=["']?(?:https?:)?//""")


def test_docs_page_loads_swagger_ui_from_the_service(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page
    assert "/docs-assets/swagger-ui.css" in page
    assert not EXTERNAL.search(page), "the page loads something from another host"
    assert '"validatorUrl": null' in page
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.text
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_docs_pages_forbid_loading_anything_from_another_host(client: TestClient) -> None:
    """ReDoc's sidebar badge fetches its logo from cdn.redoc.ly: the policy stops the browser trying."""
    for url in ("/docs", "/redoc"):
        policy = client.get(url).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "img-src 'self' data:" in policy


def test_redoc_page_loads_redoc_from_the_service_without_web_fonts(client: TestClient) -> None:
    page = client.get("/redoc").text
    assert "/docs-assets/redoc.standalone.js" in page
    assert "fonts.googleapis" not in page
    assert not EXTERNAL.search(page)
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200


def test_every_hook_example_returns_its_cards_on_any_day(settings: Settings) -> None:
    """The examples are fixture patients dated for the anchor; the served document moves them to the
    server's today, so a red flag 'within 14 days' still fires ten months later."""
    later = NOW + timedelta(days=300)
    expected = json.loads((Path(FIXTURES) / "vignettes" / "expected.json").read_text())["cases"]
    app = create_app(settings, clock=lambda: later, id_factory=counter_ids())
    with TestClient(app) as client:
        operation = client.get("/openapi.json").json()["paths"]["/cds-services/{service_id}"]["post"]
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        assert len(examples) >= 4
        for name, example in examples.items():
            case = expected[example["summary"].split(":")[0]]
            cards = client.post("/cds-services/hip-weakness", json=example["value"]).json()["cards"]
            topics = {card["source"]["topic"]["code"] for card in cards}
            assert set(case["must"]) <= topics, name
            assert not set(case["mustNot"]) & topics, name
            if case["indicator"] != "none":
                assert cards[0]["indicator"] == case["indicator"], name
            else:
                assert cards == [], name


def test_the_exported_document_keeps_the_anchor_dates(settings: Settings) -> None:
    later = NOW + timedelta(days=30)
    app = create_app(settings, clock=lambda: later, id_factory=counter_ids())
    with TestClient(app) as client:
        served = client.get("/openapi.json").json()
    assert served != app.openapi()
    assert served["paths"]["/rules"] == app.openapi()["paths"]["/rules"]


def test_the_readme_sample_card_names_the_current_rule_version(client: TestClient) -> None:
    """The README showed RF-CES v1.0.0 while the service answered v1.1.0."""
    readme = (Path(FIXTURES).parent / "README.md").read_text()
    shown = re.findall(r"rules\s+RF-CES v(\d+\.\d+\.\d+)\.", readme)
    assert shown == [client.get("/rules/RF-CES").json()["version"]]
