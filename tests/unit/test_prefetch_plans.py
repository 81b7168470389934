"""Prefetch templates are derived from what the rules read, per EHR profile (rules/ehr-profiles.yaml)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from cds_service.catalog import Catalog, load_catalog
from cds_service.registry import RuleFileError
from tests.support import ROOT

PROFILES = ("generic", "epic", "oracle")
ALL_TOKENS = re.compile(r"[?&]code=([^&]*)")


def catalog_for(profile: str, extra: Path | None = None) -> Catalog:
    return load_catalog(ROOT / "rules", extra, profile)


def code_tokens(catalog: Catalog) -> set[str]:
    templates = catalog.service("hip-weakness").prefetch.values()
    return {t for template in templates for m in ALL_TOKENS.finditer(template) for t in m.group(1).split(",")}


@pytest.mark.parametrize("profile", PROFILES)
def test_no_service_asks_for_every_observation_of_the_patient(profile: str) -> None:
    for service in catalog_for(profile).services:
        for key, template in service.prefetch.items():
            if template.startswith("Observation?"):
                assert "&code=" in template or "&category=" in template, (profile, key, template)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_query_fits_the_profiles_url_budget_once_percent_encoded(profile: str) -> None:
    catalog = catalog_for(profile)
    budget = catalog.files.profiles.profiles[profile].max_query_length
    for service in catalog.services:
        for plan in service.plans.values():
            query = plan.query.split("?", 1)[-1].replace("{{context.patientId}}", "x" * 64)
            assert len(quote(query, safe="=&")) <= budget, plan.key


@pytest.mark.parametrize("profile", PROFILES)
def test_every_code_the_rules_read_on_observations_is_asked_for(profile: str) -> None:
    """Completeness: each value-set code matched against Observation.code is in some code search,
    except where a file says why not (malignancy descendants: Conditions; ICD-10-CM: a classification)."""
    catalog = catalog_for(profile)
    asked = code_tokens(catalog)
    engine, files = catalog.engine, catalog.files
    systems = {s.uri for s in files.systems.values() if s.observation_codes}
    missing = []
    for vs_id in engine.code_valuesets("Observation"):
        if not files.valuesets[vs_id].search.observation_codes:
            continue
        for entry in engine.terminology.valuesets[vs_id].entries:
            if entry.code is None or entry.system not in systems:
                continue
            token = entry.code if profile == "generic" else f"{entry.system}|{entry.code}"
            if token not in asked:
                missing.append((vs_id, token))
    assert missing == []
    assert "malignancy" in engine.code_valuesets("Observation")  # read by the rules, on purpose not asked
    assert not any(t.endswith("363346000") for t in asked)  # malignant neoplastic disease
    assert {"8310-5", "85353-1", "hip-flexion-mrc"} <= {t.split("|")[-1] for t in asked}


def test_code_searches_are_split_over_numbered_keys_all_of_them_required() -> None:
    service = catalog_for("epic").service("hip-weakness")
    chunks = [k for k in service.plans if k.startswith("observationCodes")]
    assert len(chunks) > 1 and chunks == [f"observationCodes{i}" for i in range(1, len(chunks) + 1)]
    assert set(chunks) <= service.required
    assert {"conditions", "observations"} <= service.required
    assert "medicationRequests" not in service.required


def test_profiles_differ_where_the_ehrs_do() -> None:
    generic = catalog_for("generic").service("hip-weakness").prefetch
    epic = catalog_for("epic").service("hip-weakness").prefetch
    oracle = catalog_for("oracle").service("hip-weakness").prefetch
    assert "medicationStatements" in generic
    assert "medicationStatements" not in epic and "medicationStatements" not in oracle  # none in their R4
    assert "clinical-status=active,inactive,resolved" in epic["conditions"]  # else active only
    assert generic["observations"].endswith("category=exam,survey")
    assert epic["observations"].endswith("category=survey")  # Epic has no exam category
    assert "observations" not in oracle  # Oracle has neither: its findings are searched by code
    assert "http://loinc.org|8310-5" in "".join(epic.values())  # system|code where documented


def test_refusals_have_fallbacks_where_one_loses_nothing() -> None:
    plans = catalog_for("generic").service("hip-weakness").plans
    assert plans["observations"].fallbacks == (
        tuple(f"Observation?patient={{{{context.patientId}}}}&category={c}" for c in ("exam", "survey")),
    )
    assert plans["observationCodes1"].fallbacks == (("Observation?patient={{context.patientId}}",),)
    epic = catalog_for("epic").service("hip-weakness").plans
    assert len(epic["conditions"].fallbacks[0]) == 3  # one query per clinical status
    assert not any(
        f == ("Observation?patient={{context.patientId}}",) for p in epic.values() for f in p.fallbacks
    )


def test_a_sites_flowsheet_row_extends_the_code_searches(tmp_path: Path) -> None:
    extra = tmp_path / "site"
    extra.mkdir()
    (extra / "hip-flexion.yaml").write_text(
        """extends: hip-flexion-mrc
systems:
  epic-flowsheet-row:
    uri: urn:oid:1.2.840.114350.1.13.0.1.7.2.707679
    label: Epic flowsheet row
codes:
  - {system: epic-flowsheet-row, code: '3040104291', display: Hip flexion strength (MRC)}
"""
    )
    assert "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679|3040104291" in code_tokens(catalog_for("epic", extra))
    assert "3040104291" in code_tokens(catalog_for("generic", extra))


def test_an_unknown_profile_stops_the_service_naming_the_known_ones() -> None:
    with pytest.raises(RuleFileError, match=r"no profile 'cerner'.*epic, generic, oracle"):
        catalog_for("cerner")
