"""Matching on (system, code) only: aliases, ICD-10-CM prefixes and 7th characters, exclusions."""

from __future__ import annotations

import pytest

from cds_service.catalog import Catalog

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


def vs(catalog: Catalog, system: str, code: str) -> frozenset[str]:
    return catalog.engine.terminology.match(system, code).valuesets


@pytest.mark.parametrize(
    "code", ["S72.001A", "S72001A", "s72.001a", " S72.001A ", "S72.12XA", "S72.001B", "S72.001C", "S72"]
)
def test_icd_fracture_initial_encounter_forms_are_trauma(catalog: Catalog, code: str) -> None:
    assert "recent-trauma" in vs(catalog, ICD, code)


@pytest.mark.parametrize(
    "code", ["S72.001D", "S72.001G", "S72.001K", "S72.001P", "S72.001S", "W19.XXXD", "W19.XXXS"]
)
def test_icd_subsequent_and_sequela_characters_are_not_trauma(catalog: Catalog, code: str) -> None:
    assert "recent-trauma" not in vs(catalog, ICD, code)


@pytest.mark.parametrize("code", ["S76.011A", "S76.012A", "S73.101A", "S73.191A", "Z87.81", "Z91.81"])
def test_strains_sprains_and_history_codes_are_not_trauma(catalog: Catalog, code: str) -> None:
    assert "recent-trauma" not in vs(catalog, ICD, code)


@pytest.mark.parametrize(
    "system",
    [
        SCT,
        "urn:oid:2.16.840.1.113883.6.96",
        "http://snomed.info/sct/731000124108",
        "http://snomed.info/sct/",
        "HTTP://SNOMED.INFO/SCT",
        "https://snomed.info/sct",
        "HTTPS://snomed.info/sct/900000000000207008/version/20240101",
        " http://snomed.info/sct ",
    ],
)
def test_snomed_system_variants_match(catalog: Catalog, system: str) -> None:
    assert "ces-diagnosis" in vs(catalog, system, "192970008")


@pytest.mark.parametrize("system", [ICD, "urn:oid:2.16.840.1.113883.6.90", "http://hl7.org/fhir/sid/icd-10"])
def test_icd_system_variants_match(catalog: Catalog, system: str) -> None:
    assert "malignancy" in vs(catalog, system, "C61")


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (None, "192970008"),
        ("", "192970008"),
        ("http://example.org/other", "192970008"),
        (SCT, ""),
        (SCT, "Cauda equina syndrome"),
    ],
)
def test_unknown_system_or_display_text_never_matches(
    catalog: Catalog, system: str | None, code: str
) -> None:
    assert not vs(catalog, system or "", code)


def test_every_icd_c_code_is_malignant_and_z85_is_history(catalog: Catalog) -> None:
    for code in ("C61", "C79.51", "C41.2", "C4A.9", "C7A.00", "C44.91", "Z85.46", "Z85.3"):
        assert "malignancy" in vs(catalog, ICD, code), code
    for code in ("Z80.3", "D05.10", "Z92.21", "Z92.3"):
        assert "malignancy" not in vs(catalog, ICD, code), code


def test_family_history_snomed_is_not_cancer(catalog: Catalog) -> None:
    for code in ("429740004", "275937001"):
        assert "malignancy" not in vs(catalog, SCT, code)


def test_antiplatelets_are_not_anticoagulants(catalog: Catalog) -> None:
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert "anticoagulant-medication" not in vs(catalog, rxnorm, "1191")  # aspirin
    assert "anticoagulant-medication" not in vs(catalog, rxnorm, "32968")  # clopidogrel
    assert "anticoagulant-use" not in vs(catalog, ICD, "Z79.02")
    assert "anticoagulant-medication" in vs(catalog, rxnorm, "1364445")  # apixaban 5 MG SCD
    assert "anticoagulant-medication" not in vs(
        catalog, "http://www.whocc.no/atc", "B01AC06"
    )  # aspirin (ATC)
    assert "anticoagulant-medication" in vs(catalog, "http://www.whocc.no/atc", "B01AF02")  # apixaban


def test_meralgia_paresthetica_is_not_femoral_neuropathy(catalog: Catalog) -> None:
    assert "femoral-nerve-lesion" not in vs(catalog, ICD, "G57.11")
    assert "femoral-nerve-lesion" in vs(catalog, ICD, "G57.21")


def test_upper_limb_weakness_is_not_hip_weakness(catalog: Catalog) -> None:
    assert "hip-weakness-finding" not in vs(catalog, SCT, "15634971000119107")


def test_code_implied_laterality(catalog: Catalog) -> None:
    assert catalog.engine.terminology.match(SCT, "16018431000119109").laterality == "right"
    assert catalog.engine.terminology.match(ICD, "M25.552").laterality == "left"
