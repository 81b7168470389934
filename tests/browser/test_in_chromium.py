"""In headless Chromium, with no route off the machine: the API docs work, and a card's link opens a page.

What a reviewer and a clinician do: open /docs, *Authorize* with the audit token, "Try it out" on the hook
call with each documented example; open /redoc; follow the link on the critical card to the rule's page,
and from there a value set.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import AUDIT_TOKEN
from tests.ops.service_process import ServiceProcess
from tests.support import FIXTURES

HOOK_OPERATION = "#operations-CDS_Hooks-call_service"
EXPECTED = json.loads((FIXTURES / "vignettes" / "expected.json").read_text())["cases"]

pytestmark = pytest.mark.browser


def open_docs(page: Page, service: ServiceProcess) -> None:
    page.goto(f"{service.base}/docs")
    expect(page.locator(".opblock").first).to_be_visible()


def authorize(page: Page) -> None:
    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.get_by_label("auth-bearer-value").fill(AUDIT_TOKEN)
    dialog.get_by_role("button", name="Apply credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.get_by_role("button", name="Close").click()


def try_it_out(operation: Locator) -> tuple[int, Any]:
    clear = operation.locator("button.btn-clear")
    if clear.count():  # the previous answer would otherwise be read as this one's
        clear.click()
        expect(operation.locator(".live-responses-table")).to_have_count(0)
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_have_text("200")
    body = operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    return 200, json.loads(body)


def hook_operation(page: Page) -> Locator:
    operation = page.locator(HOOK_OPERATION)
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("tr[data-param-name='service_id'] input").fill("hip-weakness")
    return operation


def test_docs_show_the_operations(page: Page, service: ServiceProcess) -> None:
    open_docs(page, service)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for path in ("/cds-services", "/cds-services/{service_id}", "/rules/{rule_id}", "/audit/stats"):
        assert path in [p.replace("\u200b", "") for p in paths]
    expect(page.locator("button.authorize").first).to_be_visible()


def test_authorize_then_try_it_out_returns_the_critical_card_for_cauda_equina(
    page: Page, service: ServiceProcess
) -> None:
    open_docs(page, service)
    authorize(page)
    operation = hook_operation(page)
    operation.locator("select.examples-select-element").select_option("red-flag-cauda-equina")
    _, body = try_it_out(operation)
    card = body["cards"][0]
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Red flag with hip weakness (possible cauda equina syndrome)")

    # the token Authorize stored is what the audit endpoints receive
    stats = page.locator("#operations-Audit-audit_stats")
    stats.locator(".opblock-summary").click()
    stats.locator("button.try-out__btn").click()
    _, counts = try_it_out(stats)
    assert counts["invocations"] >= 1


def test_every_documented_hook_example_returns_its_cards(page: Page, service: ServiceProcess) -> None:
    open_docs(page, service)
    operation = hook_operation(page)
    options = operation.locator("select.examples-select-element option").all_inner_texts()
    assert len(options) >= 4
    for option in options:
        operation.locator("select.examples-select-element").select_option(label=option)
        _, body = try_it_out(operation)
        case = EXPECTED[option.split(":")[0]]
        topics = {card["source"]["topic"]["code"] for card in body["cards"]}
        assert set(case["must"]) <= topics and not set(case["mustNot"]) & topics, option
        assert (body["cards"][0]["indicator"] if body["cards"] else "none") == case["indicator"], option


def test_redoc_shows_the_hook_call(page: Page, service: ServiceProcess) -> None:
    page.goto(f"{service.base}/redoc")
    heading = page.get_by_role("heading", name="Call a CDS service (patient-view, order-select, order-sign)")
    expect(heading).to_be_visible()
    expect(page.get_by_text("/cds-services/{service_id}").first).to_be_attached()


def test_the_critical_cards_rule_link_opens_a_page_naming_the_rule_and_its_evidence(
    page: Page, service: ServiceProcess
) -> None:
    open_docs(page, service)
    operation = hook_operation(page)
    operation.locator("select.examples-select-element").select_option("red-flag-cauda-equina")
    _, body = try_it_out(operation)
    link = body["cards"][0]["links"][0]
    assert link["label"] == "Rule RF-CES: Suspected cauda equina syndrome"

    page.goto(link["url"])  # what the EHR does when the clinician clicks the card's link
    expect(page.get_by_role("heading", level=1)).to_have_text("RF-CES: Suspected cauda equina syndrome")
    evidence = page.get_by_role("link", name="GIRFT national suspected cauda equina syndrome pathway")
    expect(evidence).to_have_attribute(
        "href", "https://girft-interactivepathways.org.uk/cauda-equina-1/ces-pres-primary-comm-3a-1/"
    )
    expect(page.get_by_role("heading", name="Evidence")).to_be_visible()
    expect(page.get_by_text("V01: Classic cauda equina")).to_be_visible()
    assert "{" not in page.locator("main").inner_text()[:1]  # a page, not JSON


def test_a_value_set_page_lists_its_codes(page: Page, service: ServiceProcess) -> None:
    page.goto(f"{service.base}/rules/RF-CES")
    page.get_by_role(
        "link", name="Bladder, bowel or saddle dysfunction (cauda equina features)"
    ).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Bladder, bowel or saddle dysfunction (cauda equina features)"
    )
    rows = page.locator("table tbody tr")
    assert rows.count() > 3
    expect(rows.first).to_contain_text("SNOMED CT")
    expect(page.get_by_role("cell", name="267064002")).to_be_visible()


def test_the_audit_form_shows_how_often_the_rule_fired(page: Page, service: ServiceProcess) -> None:
    page.goto(f"{service.base}/rules/RF-CES")
    page.get_by_label("Audit token").fill(AUDIT_TOKEN)
    page.get_by_role("button", name="Show statistics").click()
    expect(page.get_by_role("columnheader", name="Overridden")).to_be_visible()
    assert AUDIT_TOKEN not in page.url and AUDIT_TOKEN not in page.content()


@pytest.mark.parametrize("path", ["/valuesets/lumbar-ct-order", "/rules/RF-CES", "/rules"])
def test_pages_read_on_a_phone(page: Page, service: ServiceProcess, path: str) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{service.base}{path}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page scrolls sideways on a phone"
