"""The ValueSets say what the engine matches: compose as the files write it (prefixes as regex filters
that accept exactly the codes the engine accepts), an expansion of every explicit code, site codes
marked local."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.artefacts import FhirArtefacts, Links, build_artefacts
from cds_service.artefacts.common import SITE_CODE, VALUESET_UNCLOSED
from cds_service.catalog import Catalog, load_catalog
from tests.support import ROOT

GENERATED = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def artefacts(catalog: Catalog) -> FhirArtefacts:
    return build_artefacts(catalog, Links(), GENERATED)


def test_value_sets_have_compose_and_an_expansion_of_every_explicit_code(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    valuesets = {str(v["id"]): v for v in artefacts.of_type("ValueSet")}
    assert set(valuesets) == set(catalog.valueset_files) and len(valuesets) >= 60
    with_compose = [v for v in valuesets.values() if "compose" in v]
    assert len(with_compose) == len(valuesets) - 1 >= 60
    assert "compose" not in valuesets["unable-to-bear-weight"]  # shipped empty, for sites to fill
    for vs_id, resource in valuesets.items():
        source = catalog.valueset_files[vs_id]
        expansion = resource["expansion"]
        assert expansion["timestamp"] == "2026-11-21T09:30:00Z"
        listed = {(c["system"], c["code"]) for c in expansion.get("contains", [])}
        assert len(listed) == len({c.code for c in source.codes if c.code})
        filtered = [i for i in resource.get("compose", {}).get("include", []) if "filter" in i]
        if filtered:
            assert expansion["extension"] == [{"url": VALUESET_UNCLOSED, "valueBoolean": True}]
            assert "total" not in expansion
        else:
            assert expansion["total"] == len(listed)
    trauma = valuesets["recent-trauma"]
    assert ("http://hl7.org/fhir/sid/icd-10-cm", "S72.001A") not in {
        (c["system"], c["code"]) for c in trauma["expansion"].get("contains", [])
    }
    hw = {c["code"] for c in valuesets["hip-weakness-finding"]["expansion"]["contains"]}
    assert {"R53.1", "M62.81", "26544005"} <= hw


ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _in_compose(resource: Mapping[str, Any], system: str, code: str) -> bool:
    def hit(part: Mapping[str, Any]) -> bool:
        if part["system"] != system:
            return False
        if any(c["code"] == code for c in part.get("concept", [])):
            return True
        return any(re.fullmatch(f["value"], code) for f in part.get("filter", []))

    compose = resource.get("compose", {})
    return any(map(hit, compose.get("include", []))) and not any(map(hit, compose.get("exclude", [])))


def test_prefix_filters_accept_exactly_the_codes_the_engine_accepts(
    catalog: Catalog, artefacts: FhirArtefacts
) -> None:
    terminology = catalog.engine.terminology
    outcomes: list[bool] = []
    for vs_id, source in catalog.valueset_files.items():
        resource = artefacts.read("ValueSet", vs_id)
        for entry in source.codes:
            if entry.prefix is None or entry.system != "icd10cm":
                continue
            p = entry.prefix.replace(".", "").ljust(3, "0")  # real codes have 3 to 7 characters
            other = (p[:-1] + ("Y" if p.endswith("Z") else "Z")).ljust(3, "0")
            stems = [p, other, p + "0", (p + "X9")[:5], (p + "09X")[:6]]
            candidates = {s[:7] for s in stems}
            candidates |= {(s + "XXXXXXX")[:6] + last for s in stems for last in "ABCDS"}
            for raw in sorted(candidates):
                code = raw if len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"
                engine = vs_id in terminology.match(ICD, code).valuesets
                assert _in_compose(resource, ICD, code) == engine, (vs_id, entry.prefix, code)
                outcomes.append(engine)
    assert len(outcomes) > 300 and outcomes.count(True) > 100 and outcomes.count(False) > 100


@pytest.fixture
def site_catalog(tmp_path: Path) -> Catalog:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    extra = tmp_path / "site"
    extra.mkdir()
    (extra / "flowsheets.yaml").write_text(
        yaml.safe_dump(
            {
                "extends": "unable-to-bear-weight",
                "systems": {
                    "hospital": {"uri": "http://hospital.example.org/flowsheet", "label": "Flowsheet"}
                },
                "codes": [
                    {"system": "hospital", "code": "FS-1234", "display": "Cannot bear weight (flowsheet)"}
                ],
            }
        )
    )
    return load_catalog(rules, extra)


def test_site_codes_are_included_and_marked_local(site_catalog: Catalog) -> None:
    artefacts = build_artefacts(site_catalog, Links(), GENERATED, validate=True)
    resource = artefacts.read("ValueSet", "unable-to-bear-weight")
    site = [{"url": SITE_CODE, "valueBoolean": True}]
    assert resource["version"] == "1.0.0+site"
    assert resource["compose"]["include"] == [
        {
            "extension": site,
            "system": "http://hospital.example.org/flowsheet",
            "concept": [{"code": "FS-1234", "display": "Cannot bear weight (flowsheet)"}],
        }
    ]
    assert resource["expansion"]["contains"] == [
        {
            "extension": site,
            "system": "http://hospital.example.org/flowsheet",
            "code": "FS-1234",
            "display": "Cannot bear weight (flowsheet)",
        }
    ]
    assert resource["expansion"]["total"] == 1
    shipped = artefacts.read("ValueSet", "hip-oa")
    assert "+site" not in shipped["version"] and SITE_CODE not in json.dumps(shipped)
