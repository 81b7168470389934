"""What reviewers read: the response models of the audit and explain endpoints (OpenAPI schemas).

Field descriptions are the documentation a reviewer sees in ``/docs``. Trace models are lenient
(``extra="allow"``, defaults everywhere): the stored trace is written by ``cds_service.trace`` and older
records must stay readable when that format gains a field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cds_service.schemas import Card


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# -- trace --------------------------------------------------------------------------------------------


class FactRef(Loose):
    """One piece of patient data a rule read: what it is, never what it says (no display text)."""

    resourceType: str = Field("", description="FHIR resource type, e.g. Condition.")
    id: str | None = Field(None, description="The resource id in the EHR (not the patient id).")
    system: str | None = Field(None, description="Code system of the code that matched.")
    code: str | None = Field(None, description="The code that matched a value set.")
    date: str | None = Field(None, description="The date the rule used (ISO), or null when undated.")
    dateSource: str | None = Field(None, description="onset | recorded | effective | issued | authored | ...")
    valuesets: list[str] = Field(default_factory=list, description="Value sets the code belongs to.")
    value: float | None = Field(None, description="Observation value in the canonical unit, when numeric.")
    display: str | None = Field(None, description="Explain only: the EHR's display text.")
    valueText: str | None = Field(None, description="Explain only: the value as shown on the card.")


class LeafTrace(Loose):
    label: str = Field("", description="The condition in words, as written in the rule.")
    fact: str = Field("", description="The fact evaluated (see GET /rules/vocabulary).")
    params: dict[str, Any] = Field(default_factory=dict)
    passed: bool = False
    value: Any = None
    facts: list[FactRef] = Field(default_factory=list, description="The data that made the condition true.")


class RuleTrace(Loose):
    id: str
    version: str = ""
    pathway: str = ""
    fired: bool = Field(
        False, description="The rule counted (matched, and allowed by the hip-weakness gate)."
    )
    matched: bool = Field(
        False, description="The rule's condition was true (it may still not fire when gated)."
    )
    recommends: list[str] = Field(default_factory=list, description="Card categories the rule recommends.")
    facts: list[FactRef] = Field(default_factory=list, description="The data the rule fired on.")
    leaves: list[LeafTrace] = Field(default_factory=list, description="Every condition, true or false.")


class UnreadableTrace(Loose):
    resource: str = Field("", description="Type/id of the resource the engine could not use.")
    problem: str = ""
    valuesets: list[str] = Field(default_factory=list)
    could_hide_red_flag: bool = False


class Trace(Loose):
    """The evaluation trace: every rule, fired or not and on which facts; the data that could not be read."""

    today: str | None = None
    rules_version: str | None = None
    hip_weakness: bool | None = None
    weakness_onset: str | None = None
    red_flag: bool | None = None
    categories: dict[str, list[str]] = Field(default_factory=dict, description="Category -> rules.")
    suppressed: list[dict[str, Any]] = Field(default_factory=list, description="Categories withheld, why.")
    rules: list[RuleTrace] = Field(default_factory=list)
    unreadable: list[UnreadableTrace] = Field(default_factory=list)
    notes: list[dict[str, Any]] = Field(default_factory=list)
    other_patient_resources: int = 0


# -- explain ------------------------------------------------------------------------------------------


class ExplainResponse(View):
    cards: list[Card] = Field(description="The cards the hook call would return.")
    prefetch: dict[str, str] = Field(description="Prefetch key -> supplied | fetched | null | failed.")
    trace: Trace
    recorded: bool = Field(False, description="Always false: explain never writes an audit record.")


# -- audit: invocations -------------------------------------------------------------------------------


class FeedbackView(View):
    outcome: str = Field(description="accepted | overridden")
    outcome_at: datetime = Field(description="outcomeTimestamp as sent by the EHR (UTC).")
    received_at: datetime
    card: str | None = Field(description="The card id as sent (null: the client sent none).")
    accepted_suggestions: list[str]
    reasons: list[dict[str, str]] = Field(description="Override reasons: system, code, display.")
    has_comment: bool = Field(
        description="The clinician typed a comment (its text is not stored by default)."
    )
    user_comment: str | None = Field(None, description="Only when CDS_AUDIT_STORE_USER_COMMENTS is on.")
    client_iss: str | None = None


class CardView(View):
    position: int
    uuid: str
    category: str = Field(description="source.topic.code of the card.")
    indicator: str
    summary: str
    rule_ids: list[str] = Field(description="The rules that produced this card (see GET /rules/{id}).")
    suggestion_ids: list[str]
    feedback: list[FeedbackView] = Field(default_factory=list, description="What clinicians did with it.")


class InvocationSummary(View):
    id: str = Field(description="Record id (a hookInstance may be sent more than once).")
    hook_instance: str
    service_id: str
    hook: str
    started_at: datetime
    duration_ms: float
    client_iss: str | None
    client_tenant: str | None
    patient_hash: str | None = Field(description="HMAC of the patient id; filter with ?patient=<id>.")
    rules_version: str
    hip_weakness: bool
    red_flag: bool
    card_count: int
    highest_indicator: str | None
    fired_rules: list[str]
    categories: list[str]


class InvocationPage(View):
    items: list[InvocationSummary]
    next_offset: int | None = Field(description="Pass as ?offset= for the next page; null on the last page.")


class OtherCall(View):
    id: str
    started_at: datetime


class InvocationDetail(InvocationSummary):
    prefetch: dict[str, str] = Field(
        description="Prefetch key -> supplied | fetched | paged (the EHR's first page, the rest fetched by "
        "the service) | null | failed."
    )
    prefetch_resources: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Prefetch key -> {supplied, fetched}: resources the EHR sent and the service read itself "
        "(after de-duplication across keys). Empty for calls recorded before revision 0002.",
    )
    unreadable_count: int
    recorded_at: datetime
    trace: Trace
    cards: list[CardView]
    other_calls: list[OtherCall] = Field(
        default_factory=list, description="Other calls the EHR sent with the same hookInstance."
    )


# -- audit: stats -------------------------------------------------------------------------------------


class ReasonCount(View):
    system: str | None
    code: str | None
    display: str | None
    cards: int = Field(description="Distinct cards overridden with this reason.")


class RuleStats(View):
    rule_id: str
    versions: list[str] = Field(description="Rule versions seen in the period.")
    pathway: str | None
    fired: int = Field(description="Calls in which the rule fired.")
    cards: int = Field(description="Cards shown that this rule contributed to.")
    accepted: int = Field(description="Of those, distinct cards with accepted feedback.")
    overridden: int = Field(description="Of those, distinct cards with overridden feedback.")
    with_comment: int = Field(description="Overridden cards where the clinician typed a comment.")
    override_reasons: list[ReasonCount]


class CategoryStats(View):
    category: str
    cards: int = Field(description="Cards shown.")
    indicators: dict[str, int] = Field(description="Cards shown per indicator.")
    accepted: int = Field(description="Distinct cards with accepted feedback.")
    overridden: int = Field(description="Distinct cards with overridden feedback.")
    with_comment: int = Field(description="Overridden cards where the clinician typed a comment.")
    override_reasons: list[ReasonCount]


class StatsResponse(View):
    since: datetime | None
    until: datetime | None
    service: str | None
    invocations: int
    rules: list[RuleStats]
    categories: list[CategoryStats]
    feedback_without_card: int = Field(
        description="Feedback entries that named no card (sandbox dismissals)."
    )
    feedback_unmatched: int = Field(description="Feedback naming a card the audit trail does not hold.")
