"""The CDS Hooks invariants are enforced by the response models themselves (cds-resp-1..6)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cds_service.schemas import Action, Card, Link, OverrideReason, Source, Suggestion

SOURCE = Source(label="Evidence")


def card(**fields: Any) -> Card:
    base: dict[str, Any] = {"uuid": "u", "summary": "s", "indicator": "info", "source": SOURCE}
    return Card(**(base | fields))


def suggestion(recommended: bool | None = None) -> Suggestion:
    action = Action(type="create", description="d", resource={"resourceType": "ServiceRequest"})
    return Suggestion(label="l", uuid="s", isRecommended=recommended, actions=[action])


def test_summary_must_be_under_140_characters() -> None:
    card(summary="x" * 139)
    with pytest.raises(ValidationError):
        card(summary="x" * 140)


def test_indicator_is_one_of_info_warning_critical() -> None:
    with pytest.raises(ValidationError):
        card(indicator="hard-stop")


def test_suggestions_require_selection_behavior() -> None:
    with pytest.raises(ValidationError, match="cds-resp-6"):
        card(suggestions=[suggestion()])
    card(suggestions=[suggestion()], selectionBehavior="any")


def test_at_most_one_recommended_with_at_most_one() -> None:
    with pytest.raises(ValidationError, match="cds-resp-1"):
        card(suggestions=[suggestion(True), suggestion(True)], selectionBehavior="at-most-one")
    card(suggestions=[suggestion(True), suggestion(True)], selectionBehavior="any")


def test_app_context_only_on_smart_links() -> None:
    with pytest.raises(ValidationError, match="cds-resp-3"):
        Link(label="l", url="https://x.org", type="absolute", appContext="a")
    Link(label="l", url="https://x.org", type="smart", appContext="a")


def test_link_url_must_be_absolute() -> None:
    with pytest.raises(ValidationError):
        Link(label="l", url="/rules/RF-CES", type="absolute")


def test_override_reasons_need_a_display() -> None:
    with pytest.raises(ValidationError):
        OverrideReason(system="s", code="c")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"type": "create", "resource": {"resourceType": "X"}}, True),
        ({"type": "create"}, False),
        ({"type": "delete", "resourceId": "ServiceRequest/1"}, True),
        ({"type": "delete"}, False),
        ({"type": "update"}, False),
        ({"type": "remove", "resourceId": "ServiceRequest/1"}, False),
    ],
)
def test_action_requirements_per_type(fields: dict[str, Any], ok: bool) -> None:
    if ok:
        Action(description="d", **fields)
    else:
        with pytest.raises(ValidationError):
            Action(description="d", **fields)


def test_one_action_per_suggestion() -> None:
    action = Action(type="create", description="d", resource={"resourceType": "X"})
    with pytest.raises(ValidationError):
        Suggestion(label="l", uuid="u", actions=[action, action])


def test_wire_form_has_no_null_members() -> None:
    dumped = card().wire()
    assert dumped == {"uuid": "u", "summary": "s", "indicator": "info", "source": {"label": "Evidence"}}
