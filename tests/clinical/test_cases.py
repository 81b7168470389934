"""Our own clinical cases (tests/clinical/cases/*.yaml), written from knowledge.md and codes.md in the same
compact form as the public vignettes, through the HTTP endpoint: every pathway, code family, look-alike and
data-quality form the knowledge base names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.fixtures import case_resources, validate_r4
from tests.support import NOW, SERVICE, case_request, categories, highest_indicator

CASES_DIR = Path(__file__).parent / "cases"


def load_cases() -> list[Any]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()) or []:
            cases.append(pytest.param(case, id=f"{path.stem}:{case['id']}"))
    return cases


CASES = load_cases()


@pytest.mark.parametrize("case", CASES)
def test_case(client: TestClient, case: dict[str, Any]) -> None:
    if not any("fhir" in r for r in case["resources"]):
        validate_r4(case_resources(case, NOW.date()))  # the case itself is valid FHIR R4
    response = client.post(f"/cds-services/{SERVICE}", json=case_request(case))
    assert response.status_code == 200, response.text
    data = response.json()
    got = categories(data)
    expected = case["expected"]
    why = f"{case['id']} ({case.get('pathways', '')}): got {got}"
    for category in expected.get("must", []):
        assert category in got, f"missing {category}; {why}"
    for category in expected.get("mustNot", []):
        assert category not in got, f"must not return {category}; {why}"
    assert highest_indicator(data) == expected["indicator"], why


def test_there_are_cases_for_every_pathway() -> None:
    pathways = " ".join(str(p.values[0].get("pathways", "")) for p in CASES)  # type: ignore[union-attr]
    for name in (
        "RF-CES",
        "RF-PROG",
        "RF-SBP",
        "RF-TRAUMA",
        "RF-INF",
        "RF-WL",
        "RF-CA",
        "RF-AC",
        "N-RAD",
        "N-DISC",
        "N-STEN",
        "N-FEM",
        "N-PLEX",
        "N-GLUT",
        "H-OA",
        "H-SUSP",
        "H-FAI",
        "H-LAB",
        "M-STR",
        "M-TB",
        "M-IPS",
        "M-DIS",
        "M-GLUT",
        "M-CORE",
        "M-ER",
    ):
        assert name in pathways, name
