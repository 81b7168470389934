"""Fixture files made loadable: stable ids for Synthea's POST/urn:uuid bundles, vignette date shifts."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from cds_service.fixtures import ANCHOR
from cds_service.tools.fixture_files import discover, prepare, with_stable_ids
from tests.support import FIXTURES

BARNEY = FIXTURES / "synthea" / "Barney_Abbott_3f228315-d2de-4292-a56a-b7c120c2875d.json"


def references(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found.append(item)
            else:
                found += references(item)
    elif isinstance(value, list):
        for item in value:
            found += references(item)
    return found


def test_synthea_posts_become_puts_at_the_urn_uuid() -> None:
    original = json.loads(BARNEY.read_text())
    stable = with_stable_ids(original)
    ids = set()
    for before, after in zip(original["entry"], stable["entry"], strict=True):
        uuid = before["fullUrl"].removeprefix("urn:uuid:")
        rtype = before["resource"]["resourceType"]
        assert after["request"] == {"method": "PUT", "url": f"{rtype}/{uuid}"}
        assert after["resource"]["id"] == uuid
        ids.add(f"{rtype}/{uuid}")
    refs = references([e["resource"] for e in stable["entry"]])
    assert refs and not [r for r in refs if r.startswith("urn:uuid:")]
    assert {r for r in refs if not r.startswith("#")} <= ids  # all inside the bundle (or contained)
    assert with_stable_ids(stable) == stable  # PUT bundles (the vignettes) pass unchanged
    assert original["entry"][0]["request"]["method"] == "POST"  # the input is not modified


def test_conditional_creates_are_left_alone() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:aaa",
                "resource": {"resourceType": "Organization"},
                "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=x|1"},
            }
        ],
    }
    assert with_stable_ids(bundle) == bundle


def test_vignettes_move_so_the_anchor_is_today() -> None:
    today = ANCHOR + timedelta(days=100)
    patient = prepare(FIXTURES / "vignettes" / "V01.json", today)
    assert patient.patient_id == "hw-v01"
    assert patient.title == "V01 Classic cauda equina"
    assert patient.shifted_days == 100
    resources = {e["resource"]["id"]: e["resource"] for e in patient.bundle["entry"]}
    assert resources["hw-v01-con-1"]["onsetDateTime"] == (date(2026, 1, 9) + timedelta(days=100)).isoformat()
    assert resources["hw-v01"]["birthDate"] == (date(1981, 1, 15) + timedelta(days=100)).isoformat()


def test_synthea_dates_are_not_moved() -> None:
    patient = prepare(BARNEY, ANCHOR + timedelta(days=100))
    assert patient.shifted_days == 0
    assert patient.title == "Barney Abbott"
    assert patient.patient_id == "5ee05359-57bf-4cee-8e89-91382c07e162"


def test_discover_finds_patient_bundles_only() -> None:
    names = [p.stem for p in discover(FIXTURES)]
    assert len(names) == 45  # 40 vignettes, 2 Synthea patients, 3 in Epic's and Oracle's shapes
    assert "expected" not in names and not [n for n in names if n.endswith(".request")]
    assert [p.stem for p in discover(FIXTURES, ["v01", "barney"])] == [BARNEY.stem, "V01"]


def test_every_vignette_patient_carries_a_synthetic_name() -> None:
    """An EHR or the sandbox showed the vignette patients as "Unknown"."""
    import json

    from tests.support import FIXTURES

    names = set()
    for path in sorted((FIXTURES / "vignettes").glob("V*.json")):
        patient = json.loads(path.read_text())["entry"][0]["resource"]
        [name] = patient["name"]
        assert name["family"] and name["given"] and name["text"].endswith("(synthetic)"), path.name
        names.add(name["text"])
    assert len(names) >= 30  # not one name for everyone
    for path in (FIXTURES / "examples").glob("*.request.json"):
        assert json.loads(path.read_text())["value"]["prefetch"]["patient"]["name"], path.name
