"""The shape of the code files in ``rules/``: code systems, value sets (and a site's additions),
quantities (units, plausible ranges) and status vocabularies. Validated at start-up like the rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cds_service.engine.model import Identifier, Regex, Strict, Version

# -- code systems, quantities, status ----------------------------------------------------------------


class CodeSystemSpec(Strict):
    uri: str
    label: str = Field(description="Short name shown on cards (e.g. SNOMED CT).")
    aliases: list[str] = Field(default_factory=list)
    uri_prefixes: list[str] = Field(default_factory=list)
    prefix_matching: bool = False
    normalise: Literal["strip", "icd"] = "strip"
    observation_codes: bool = Field(
        True,
        description="List this system's codes in Observation code searches (prefetch). False for a "
        "diagnosis classification (ICD-10-CM): findings coded in it are Conditions.",
    )


class CodeSystemsFile(Strict):
    systems: dict[Identifier, CodeSystemSpec]


# -- value sets -------------------------------------------------------------------------------------


class CodeEntry(Strict):
    system: str = Field(description="Short name from code-systems.yaml (sct, icd10cm, loinc, ...) or URI.")
    code: str | None = None
    prefix: str | None = Field(None, description="Prefix match (ICD-10-CM, ATC only).")
    seventh: list[str] | None = Field(None, description="Allowed ICD-10-CM 7th characters.")
    exclude: bool = False
    laterality: Literal["left", "right", "bilateral"] | None = None
    display: str | None = None
    verification: str | None = Field(None, description="Evidence tag from codes.md ([T], [V: ...], ...).")


class SearchHints(Strict):
    """How the patient's data in this value set is found on a FHIR server (prefetch derivation)."""

    observation_codes: bool = Field(
        True,
        description="List the codes in Observation code searches. False where the findings are recorded "
        "as Conditions and the codes are too many for a query (a descendant expansion); `note` says why.",
    )
    observation_categories: list[str] = Field(
        default_factory=list,
        description="Observation categories these findings are filed under (vital-signs, exam, survey): "
        "searched by category too, which finds them inside panels and under local codes.",
    )
    panel_codes: list[CodeEntry] = Field(
        default_factory=list,
        description="Codes of panels whose components carry these findings (a temperature inside a vital-"
        "signs panel): searched by code too, since a code search matches Observation.code only.",
    )
    note: str = ""


class ValueSetFile(Strict):
    id: Identifier
    version: Version
    title: str
    description: str = ""
    value_kind: str | None = Field(None, description="How observation values are read (quantities.yaml).")
    not_at_sites: list[Regex] = Field(
        default_factory=list,
        description="Regular expressions: a finding whose bodySite text or display matches one is not in "
        "this value set (a generic 'muscle strain' of the shoulder is not a hip strain).",
    )
    sources: list[str] = Field(default_factory=list)
    search: SearchHints = Field(default_factory=SearchHints)
    codes: list[CodeEntry] = Field(default_factory=list)


class ExtraCodesFile(Strict):
    """A site's additions to a shipped value set (``CDS_EXTRA_VALUESETS_DIR``), with any local code
    systems it needs (e.g. flowsheet rows), so no shipped file is edited."""

    extends: Identifier
    note: str = ""
    systems: dict[Identifier, CodeSystemSpec] = Field(default_factory=dict)
    codes: list[CodeEntry] = Field(min_length=1)


class UnitSpec(Strict):
    factor: float = 1.0
    offset: float = 0.0


class QuantityKindSpec(Strict):
    canonical_unit: str
    display_unit: str
    units: dict[str, UnitSpec]
    plausible: tuple[float, float]
    unitless_ok: bool = False
    integers_only: bool = False
    coded_values: list[CodedValue] = Field(default_factory=list)


class CodedValue(Strict):
    system: str
    code: str
    value: float


class QuantitiesFile(Strict):
    kinds: dict[Identifier, QuantityKindSpec]


class StatusSpec(Strict):
    current: list[str] = Field(default_factory=list)
    inactive: list[str] = Field(default_factory=list)
    ended: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)


class AnswerTextSpec(Strict):
    """Whole-text answers (``valueString``, or a ``valueCodeableConcept`` with text and no usable coding)
    read as absent or present; regular expressions matched against the whole trimmed text, any case."""

    negative: list[Regex] = Field(default_factory=list)
    positive: list[Regex] = Field(default_factory=list)


class StatusFile(Strict):
    condition_verification_excluded: list[str]
    resources: dict[str, StatusSpec]
    laterality_valueset: Identifier
    negative_answer_valueset: Identifier
    answer_text: AnswerTextSpec = Field(default_factory=AnswerTextSpec)


QuantityKindSpec.model_rebuild()
