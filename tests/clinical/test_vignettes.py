"""The 40 public vignettes through the HTTP endpoint, as an EHR would send them (knowledge §5, vignettes.md).

Each fixture in fhir_fixtures/vignettes/ is a FHIR R4 transaction Bundle dated for the anchor "today";
the clock is frozen at that anchor. Expected: must / must-not categories and the highest indicator.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.jsonrules import assert_no_empty_members
from tests.support import (
    SERVICE,
    bundle_resources,
    categories,
    highest_indicator,
    hook_request,
    vignette_bundle,
    vignette_expectations,
)

EXPECTED: dict[str, Any] = vignette_expectations()["cases"]


@pytest.mark.parametrize("case_id", sorted(EXPECTED))
def test_vignette(client: TestClient, case_id: str) -> None:
    expected = EXPECTED[case_id]
    body = hook_request(bundle_resources(vignette_bundle(case_id)), expected["patient"])
    response = client.post(f"/cds-services/{SERVICE}", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert_no_empty_members(data)
    got = categories(data)
    assert len(got) == len(set(got)), "one card per category"
    for category in expected["must"]:
        assert category in got, f"{case_id} ({expected['pathways']}): missing {category}; got {got}"
    for category in expected["mustNot"]:
        assert category not in got, (
            f"{case_id} ({expected['pathways']}): must not return {category}; got {got}"
        )
    assert highest_indicator(data) == expected["indicator"], f"{case_id}: got {got}"
    if "urgent-referral" in got:
        assert "physiotherapy" not in got
