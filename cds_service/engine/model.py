"""The shape of the files in ``rules/``: pydantic models validated at start-up.

A rule names facts and operators only by name; ``cds_service.engine.facts`` declares them. Unknown
members, facts, operators, value sets, categories or code systems make the service refuse to start with
a message that names the file and the field (``registry`` and ``engine.compile``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


#: A regular expression in a rule file, checked at start-up.
Regex = Annotated[str, AfterValidator(_compiles)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{0,63}$")]
Version = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
CategoryCode = Literal[
    "urgent-referral",
    "mri-lumbar-spine",
    "nerve-conduction-study",
    "hip-imaging",
    "orthopedic-referral",
    "physiotherapy",
]
Pathway = Literal["entry", "red-flag", "neurological", "hip", "muscular", "default", "order"]
IndicatorName = Literal["info", "warning", "critical"]


class RuleFileError(Exception):
    """A rule or value-set file is invalid; the message names the file and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- rules --------------------------------------------------------------------------------------------


class Evidence(Strict):
    label: str
    url: str | None = None
    seed: str | None = Field(None, description="Seed article file name in the product's source set.")
    note: str | None = None


class OrderCode(Strict):
    system: str
    code: str
    display: str


class OrderSpec(Strict):
    """A FHIR ServiceRequest a card suggests (built and validated with fhir.resources R4B)."""

    id: Identifier
    label: str = Field(description="Suggestion label shown to the clinician.")
    codes: list[OrderCode] = Field(min_length=1)
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"
    note: str | None = None
    recommended: bool = False
    drafted_as: Identifier | None = Field(
        None,
        description="A value set of orders that stand for this one: when a draft order carries one of its "
        "codes (or one of this order's own codes) the card does not suggest the order again.",
    )


class CardText(Strict):
    short: Annotated[str, StringConstraints(min_length=3, max_length=60)] = Field(
        description="Few words naming the reason, used in the card summary."
    )
    reason: str = Field(description="One markdown line: why this rule fired (findings follow it).")
    advice: list[str] = Field(default_factory=list, description="What to do (markdown lines).")
    summary: Annotated[str, StringConstraints(min_length=10, max_length=139)] | None = Field(
        None,
        description="For a rule whose message is not the category's advice (an order that may not be "
        "indicated): replaces the category's summary, and the category's advice is not shown on its card "
        "(this rule's advice replaces it). '{ordered}' is replaced by the labels of the draft-order "
        "criteria that matched (e.g. 'MRI and CT').",
    )
    category_order: bool = Field(
        True, description="Offer the category's own order as a suggestion (off when the card questions it)."
    )


class Leaf(BaseModel):
    """``{fact: <name>, label?, op?, value?, <fact parameters>}``; parameters are checked per fact."""

    model_config = ConfigDict(extra="allow", frozen=True)

    fact: str
    label: str | None = None
    op: str | None = None
    value: float | bool | None = None


class All(Strict):
    all: list[Node] = Field(min_length=1)
    label: str | None = None


class Any_(Strict):
    any: list[Node] = Field(min_length=1)
    label: str | None = None


class Not(Strict):
    not_: Node = Field(alias="not")
    label: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Node = All | Any_ | Not | Leaf


class RuleFile(Strict):
    id: Identifier
    version: Version
    pathway: Pathway
    name: str
    recommends: list[CategoryCode] = Field(default_factory=list)
    indicator: IndicatorName | None = Field(None, description="Overrides the category's indicator.")
    logic: str = Field(description="Plain-language When/Then, for reviewers.")
    evidence: list[Evidence] = Field(min_length=1)
    card: CardText
    orders: list[OrderSpec] = Field(default_factory=list)
    when: Node
    review_note: str | None = Field(None, description="Open clinical question for the safety review.")
    withdraw_drafts: bool = Field(
        False, description="Order rules: also suggest deleting the draft orders that made the rule fire."
    )


# -- policy -----------------------------------------------------------------------------------------


class SuppressSpec(Strict):
    category: CategoryCode
    when_pathway_fired: Pathway
    reason: str


class PolicyFile(Strict):
    entry_rule: Identifier
    gated_pathways: list[Pathway]
    red_flag_pathway: Pathway = "red-flag"
    suppress: list[SuppressSpec] = Field(default_factory=list)
    category_order: list[CategoryCode] = Field(min_length=6, max_length=6)
    safety_prompt: str | None = Field(
        None, description="Advice added to every card that no red flag produced (knowledge §8 S3)."
    )


for _model in (All, Any_, Not, RuleFile):
    _model.model_rebuild()


def node_children(node: Node) -> list[Node]:
    if isinstance(node, All):
        return node.all
    if isinstance(node, Any_):
        return node.any
    if isinstance(node, Not):
        return [node.not_]
    return []


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for child in node_children(node) for leaf in leaves(child)]


def leaf_params(leaf: Leaf) -> dict[str, Any]:
    return dict(leaf.model_extra or {})
