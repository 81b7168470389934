"""Feedback bodies (CDS Hooks 2.0.1 §Feedback) as real clients send them, reduced to what is stored.

The spec: ``{"feedback": [{card, outcome, acceptedSuggestions?, overrideReason?, outcomeTimestamp}]}``
with ``overrideReason = {reason?: Coding, userComment?: string}``. Read leniently, because real clients
differ (STANDARD.md §2.7):

- Epic spells the member ``overrideReasons`` (an object, and possibly a list), may describe the reason
  only with its extensions ``com.epic.cdshooks.feedback.overrideReason.reasonCategory / reasonDisplay /
  reasonTitle``, and uses card ids that are not UUIDs (``"123456"``);
- the sandbox sends a reason Coding without ``display``, and ``overridden`` feedback with no ``card`` when
  the card had no uuid;
- feedback comes in batches and repeatedly for the same card.

Strict where it matters: ``outcome`` must be ``accepted`` or ``overridden`` and ``outcomeTimestamp`` must be
a date-time (a time without zone is taken as UTC), else 400 naming the entry and field.

Identity (idempotency): the same (service, card, outcome, outcomeTimestamp, accepted suggestion ids) is
stored once, whatever the batch or how often it is sent; for card-less entries the reason is part of it.
The free-text ``userComment`` can name the patient, so only whether there was one is stored unless
``CDS_AUDIT_STORE_USER_COMMENTS`` is on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from cds_service.engine.dates import as_utc

EPIC_REASON = "com.epic.cdshooks.feedback.overrideReason."
EPIC_SYSTEM = "urn:com.epic.cdshooks.feedback.overrideReason"

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4096)]
CardId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)


class FeedbackCoding(Lenient):
    """A Coding as clients send it: ``display`` often missing (sandbox), ``system`` sometimes."""

    system: Text | None = None
    code: Text | None = None
    display: Text | None = None


class OverrideReasonIn(Lenient):
    reason: FeedbackCoding | None = None
    userComment: str | None = Field(None, max_length=100_000)
    extension: dict[str, Any] | None = None


def _number_as_text(value: object) -> object:
    """Card and suggestion ids sent as JSON numbers (``123456``) are read as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class AcceptedSuggestion(Lenient):
    id: CardId

    _id_text = field_validator("id", mode="before")(_number_as_text)


class FeedbackItem(Lenient):
    card: CardId | None = Field(None, description="The card's uuid (any string: Epic sends e.g. 123456).")
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] = Field(default_factory=list, max_length=100)
    overrideReason: OverrideReasonIn | None = None
    overrideReasons: OverrideReasonIn | list[OverrideReasonIn] | None = Field(
        None, description="Epic's spelling; an object or a list."
    )
    outcomeTimestamp: datetime
    extension: dict[str, Any] | None = None

    _card_text = field_validator("card", mode="before")(_number_as_text)

    @field_validator("outcomeTimestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class FeedbackRequest(Lenient):
    feedback: list[FeedbackItem]


@dataclass(frozen=True)
class Reason:
    system: str | None
    code: str | None
    display: str | None

    def as_json(self) -> dict[str, str]:
        return {
            k: v for k, v in (("system", self.system), ("code", self.code), ("display", self.display)) if v
        }


@dataclass(frozen=True)
class FeedbackEntry:
    """One feedback entry as stored (table ``audit_feedback``)."""

    id: str
    service_id: str
    card_uuid: str | None
    outcome: str
    outcome_at: datetime
    accepted_suggestions: list[str]
    reasons: list[Reason]
    has_comment: bool
    user_comment: str | None
    client_iss: str | None
    client_tenant: str | None
    received_at: datetime

    def row(self) -> dict[str, Any]:
        first = self.reasons[0] if self.reasons else Reason(None, None, None)
        return {
            "id": self.id,
            "service_id": self.service_id,
            "card_uuid": self.card_uuid,
            "outcome": self.outcome,
            "outcome_at": self.outcome_at,
            "accepted_suggestions": self.accepted_suggestions,
            "reason_system": _clip(first.system, 512),
            "reason_code": _clip(first.code, 256),
            "reason_display": _clip(first.display, 512),
            "reasons": [r.as_json() for r in self.reasons],
            "has_comment": self.has_comment,
            "user_comment": self.user_comment,
            "client_iss": _clip(self.client_iss, 512),
            "client_tenant": _clip(self.client_tenant, 256),
            "received_at": self.received_at,
        }


def entries(
    request: FeedbackRequest,
    service_id: str,
    *,
    client_iss: str | None,
    client_tenant: str | None,
    received_at: datetime,
    store_comments: bool,
    reason_displays: Mapping[tuple[str, str], str] | None = None,
) -> list[FeedbackEntry]:
    """The entries to store, duplicates within the batch removed (first one kept). ``reason_displays``:
    the override reasons the cards offer, ``(system, code) -> display``; a reason sent without its
    display (the sandbox does that) is stored with ours, so the statistics can say what it means."""
    out: dict[str, FeedbackEntry] = {}
    for item in request.feedback:
        overrides = _override_objects(item)
        reasons = [r for o in overrides if (r := _reason(o, item.extension)) is not None]
        reasons = [with_display(r, reason_displays or {}) for r in reasons]
        if not reasons and item.extension and (epic := _epic_reason(item.extension)) is not None:
            reasons.append(epic)
        comments = [o.userComment.strip() for o in overrides if o.userComment and o.userComment.strip()]
        suggestions = sorted({s.id for s in item.acceptedSuggestions})
        key = identity(service_id, item.card, item.outcome, item.outcomeTimestamp, suggestions, reasons)
        out.setdefault(
            key,
            FeedbackEntry(
                id=key,
                service_id=service_id,
                card_uuid=item.card,
                outcome=item.outcome,
                outcome_at=item.outcomeTimestamp,
                accepted_suggestions=suggestions,
                reasons=reasons,
                has_comment=bool(comments),
                user_comment="\n".join(comments) if comments and store_comments else None,
                client_iss=client_iss,
                client_tenant=client_tenant,
                received_at=received_at,
            ),
        )
    return list(out.values())


def with_display(reason: Reason, displays: Mapping[tuple[str, str], str]) -> Reason:
    """``reason`` with the display of the override reason it codes, when it came without one."""
    if reason.display or not reason.code:
        return reason
    for (system, code), display in displays.items():
        if code == reason.code and reason.system in (None, system):
            return Reason(system, reason.code, display)
    return reason


def identity(
    service_id: str,
    card: str | None,
    outcome: str,
    at: datetime,
    suggestions: Sequence[str],
    reasons: Sequence[Reason],
) -> str:
    """The idempotency key. Card-less entries (sandbox) add the reason: the card cannot tell them apart."""
    parts: list[Any] = [service_id, card, outcome, at.astimezone(UTC).isoformat(), list(suggestions)]
    if card is None:
        parts.append([r.as_json() for r in reasons])
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


def _override_objects(item: FeedbackItem) -> list[OverrideReasonIn]:
    found: list[OverrideReasonIn] = []
    if item.overrideReason is not None:
        found.append(item.overrideReason)
    if isinstance(item.overrideReasons, list):
        found.extend(item.overrideReasons)
    elif item.overrideReasons is not None:
        found.append(item.overrideReasons)
    return found


def _reason(override: OverrideReasonIn, item_extension: Mapping[str, Any] | None) -> Reason | None:
    coding = override.reason
    if coding is not None and (coding.code or coding.display):
        return Reason(coding.system, coding.code, coding.display)
    for source in (override.extension, override.model_extra, item_extension):
        if source and (epic := _epic_reason(source)) is not None:
            return epic
    return None


def _epic_reason(source: Mapping[str, Any]) -> Reason | None:
    """Epic's reason extensions: category (a code), display and title (texts from the EHR's build)."""
    values = {k.removeprefix(EPIC_REASON): v for k, v in source.items() if k.startswith(EPIC_REASON)}
    category, display, title = (
        _text(values.get(k)) for k in ("reasonCategory", "reasonDisplay", "reasonTitle")
    )
    if not (category or display or title):
        return None
    return Reason(EPIC_SYSTEM, category, display or title)


def _text(value: object) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text[:512] or None
    return None


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None
