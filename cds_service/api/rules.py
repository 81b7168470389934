"""``GET /rules``, ``GET /rules/{id}``, ``GET /valuesets``, ``GET /valuesets/{id}``: every rule and value set.

Public (no credential): cards link here so clinicians can read why a card was shown, and the audit trail
names rules by id and version. A rule document carries its version, pathway, plain-language logic, the
logic tree, evidence, card text and orders, the categories it recommends, and (``GET /rules/{id}``) the
codes of every value set it reads, so a reviewer needs nothing else to check it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cds_service.api import rule_pages
from cds_service.api.deps import StateDep
from cds_service.api.negotiate import wants_html
from cds_service.api.openapi_docs import error_response
from cds_service.catalog import Catalog
from cds_service.engine.code_files import ValueSetFile
from cds_service.engine.facts import vocabulary
from cds_service.engine.model import CardText, Evidence, OrderSpec

router = APIRouter(tags=["Rules"])
#: Browsers (``Accept: text/html``) get a page, API clients JSON: documented on each route.
HTML_TOO = {"text/html": {"schema": {"type": "string"}}}


class CategoryRef(BaseModel):
    code: str = Field(description="The card category (the card's source.topic.code).")
    display: str
    indicator: str = Field(description="The indicator of the card this rule contributes to.")


class RuleDocument(BaseModel):
    """One rule as a reviewer reads it (fields of the rule file, plus what the service derives)."""

    model_config = ConfigDict(extra="allow")

    id: str
    version: str = Field(description="Semantic version; recorded with every evaluation in the audit trail.")
    pathway: str = Field(description="entry | red-flag | neurological | hip | muscular | default | order")
    name: str
    logic: str = Field(description="The rule in plain language (When ... Then ...).")
    recommends: list[str] = Field(description="Card categories the rule recommends when it fires.")
    indicator: str | None = Field(None, description="Overrides the category's indicator when set.")
    evidence: list[Evidence]
    card: CardText = Field(
        description="Card template: short reason for the summary, reason and advice lines."
    )
    orders: list[OrderSpec] = Field(default_factory=list, description="Orders the card suggests.")
    when: dict[str, Any] = Field(description="The logic tree; leaves name facts (see GET /rules/vocabulary).")
    review_note: str | None = Field(None, description="Open clinical question for the safety review.")
    valuesets: list[str] = Field(description="Value sets the rule reads (GET /valuesets/{id}).")
    categories: list[CategoryRef]
    codes: list[ValueSetFile] | None = Field(
        None, description="GET /rules/{id} only: every value set the rule reads, with its codes."
    )
    rules_version: str = Field(description="Content hash of all rule files loaded.")


class ValueSetSummary(BaseModel):
    id: str
    version: str
    title: str
    codes: int = Field(description="Number of codes (GET /valuesets/{id} lists them).")


class RulesIndex(BaseModel):
    rules_version: str
    rules: list[RuleDocument]
    valuesets: list[ValueSetSummary]
    categories: list[dict[str, Any]] = Field(description="The card categories with summary templates.")
    policy: dict[str, Any] = Field(description="Entry gate, suppression and category order.")


class ValueSetList(BaseModel):
    valuesets: list[ValueSetFile]


RULE_EXAMPLE: dict[str, Any] = {
    "id": "RF-CES",
    "version": "1.0.0",
    "pathway": "red-flag",
    "name": "Suspected cauda equina syndrome",
    "logic": "When hip weakness is present and any of: a new bladder, bowel or saddle symptom ... "
    "Then same-day emergency spinal pathway with emergency MRI.",
    "recommends": ["urgent-referral"],
    "evidence": [
        {
            "label": "GIRFT national suspected cauda equina syndrome pathway",
            "url": "https://girft-interactivepathways.org.uk/cauda-equina-1/ces-pres-primary-comm-3a-1/",
        }
    ],
    "card": {
        "short": "possible cauda equina syndrome",
        "reason": "**Possible cauda equina syndrome**: new bladder, bowel or saddle symptoms or new "
        "bilateral leg weakness.",
        "advice": ["Same-day emergency spinal pathway: **emergency MRI of the lumbosacral spine** ..."],
    },
    "orders": [
        {
            "id": "mri-lumbar-emergency",
            "label": "Order emergency MRI lumbosacral spine (suspected cauda equina)",
            "codes": [
                {"system": "loinc", "code": "36111-3", "display": "MR Lumbar spine limited WO contrast"}
            ],
            "priority": "stat",
            "recommended": False,
        }
    ],
    "when": {
        "any": [
            {
                "fact": "finding",
                "label": "New bladder, bowel or saddle symptom",
                "valueset": "ces-sphincter-saddle",
                "within_days": 14,
            }
        ]
    },
    "valuesets": ["ces-diagnosis", "ces-sphincter-saddle"],
    "categories": [
        {
            "code": "urgent-referral",
            "display": "Urgent referral (same-day emergency assessment)",
            "indicator": "critical",
        }
    ],
    "codes": [
        {
            "id": "ces-diagnosis",
            "version": "1.0.0",
            "title": "Cauda equina syndrome or spinal cord/cauda equina compression (diagnosis)",
            "codes": [{"system": "sct", "code": "192970008", "display": "Cauda equina syndrome (disorder)"}],
        }
    ],
    "rules_version": "fe623a51d1b1",
}


def rule_document(catalog: Catalog, rule_id: str, *, with_codes: bool = False) -> RuleDocument:
    compiled = catalog.rule(rule_id)
    if compiled is None:
        raise HTTPException(404, f"Unknown rule {rule_id[:64]!r}")
    spec = compiled.spec
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["valuesets"] = sorted(compiled.valuesets)
    doc["categories"] = [
        {
            "code": c,
            "display": catalog.category(c).display,
            "indicator": spec.indicator or catalog.category(c).indicator,
        }
        for c in spec.recommends
    ]
    if with_codes:
        doc["codes"] = [catalog.valueset_files[v] for v in doc["valuesets"] if v in catalog.valueset_files]
    doc["rules_version"] = catalog.version
    return RuleDocument.model_validate(doc)


@router.get(
    "/rules",
    response_model=RulesIndex,
    response_model_exclude_none=True,
    summary="All rules, their pathways and categories",
    operation_id="list_rules",
    responses={200: {"content": HTML_TOO}},
)
async def list_rules(request: Request, state: StateDep) -> RulesIndex | Response:
    """Every rule with id, version, pathway, plain-language logic, evidence, card template and the
    categories it recommends; the value sets (codes: `GET /valuesets`); the categories and the policy.
    A browser (`Accept: text/html`) gets the index page: every rule by pathway."""
    if wants_html(request):
        return rule_pages.index_html(state)
    rs = state.catalog
    return RulesIndex(
        rules_version=rs.version,
        rules=[rule_document(rs, r.id) for r in rs.rules],
        valuesets=[
            ValueSetSummary(id=v.id, version=v.version, title=v.title, codes=len(v.codes))
            for v in rs.valueset_files.values()
        ],
        categories=[c.model_dump(mode="json") for c in rs.categories.categories],
        policy=rs.policy.model_dump(mode="json"),
    )


@router.get(
    "/rules/vocabulary", summary="Facts and operators rule files may use", operation_id="rule_vocabulary"
)
async def rule_vocabulary() -> dict[str, Any]:
    """What a rule author can write: each fact with its parameters, and the comparison operators."""
    return vocabulary()


@router.get(
    "/rules/{rule_id}",
    response_model=RuleDocument,
    response_model_exclude_none=True,
    summary="One rule in full, with the codes it reads",
    operation_id="get_rule",
    responses={
        200: {"content": {"application/json": {"example": RULE_EXAMPLE}, **HTML_TOO}},
        404: error_response("Unknown rule id."),
    },
)
async def get_rule(rule_id: str, request: Request, state: StateDep) -> RuleDocument | Response:
    """The rule's logic in words and as a tree, evidence, card text, orders, and every value set it reads
    with all their codes (system, code or prefix, display, verification source).

    The link on a card points here: a browser (`Accept: text/html`) gets the rule's page, with the example
    patients that fire it and, for a holder of the audit token, how often it fired and was overridden."""
    if wants_html(request):
        return await rule_pages.rule_html(state, rule_id, rule_pages.bearer(request))
    return rule_document(state.catalog, rule_id, with_codes=True)


@router.get(
    "/valuesets",
    response_model=ValueSetList,
    response_model_exclude_none=True,
    summary="Every value set with its codes",
    operation_id="list_valuesets",
)
async def list_valuesets(state: StateDep) -> ValueSetList:
    """All value sets the rules read, each with every code, display and verification source."""
    return ValueSetList(valuesets=list(state.catalog.valueset_files.values()))


@router.get(
    "/valuesets/{valueset_id}",
    response_model=ValueSetFile,
    response_model_exclude_none=True,
    summary="One value set with its codes",
    operation_id="get_valueset",
    responses={200: {"content": HTML_TOO}, 404: error_response("Unknown value set id.")},
)
async def get_valueset(valueset_id: str, request: Request, state: StateDep) -> ValueSetFile | Response:
    """Every code (system, code or prefix, display, verification source) of the value set; a page for a
    browser (`Accept: text/html`)."""
    if wants_html(request):
        return rule_pages.valueset_html(state, valueset_id)
    vs: ValueSetFile | None = state.catalog.valueset_files.get(valueset_id)
    if vs is None:
        raise HTTPException(404, f"Unknown value set {valueset_id[:64]!r}")
    return vs
