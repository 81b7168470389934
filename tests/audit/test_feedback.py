"""POST /cds-services/{id}/feedback: the spec's shape, real clients' variants, batches and repeats."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from cds_service.api.feedback import EXAMPLES
from cds_service.audit.database import normalise_url
from cds_service.audit.tables import feedback as feedback_table
from tests.audit.conftest import AUDIT, audit_settings, flush, open_client, private_request

URL = "/cds-services/hip-weakness"
FEEDBACK = f"{URL}/feedback"
REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"


def stored(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(normalise_url(database_url))
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(select(feedback_table).order_by(feedback_table.c.outcome_at))
        ]
    engine.dispose()
    return rows


def ok(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {}


def item(card: str | None = "card-1", outcome: str = "overridden", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"outcome": outcome, "outcomeTimestamp": "2026-01-15T12:05:00Z", **extra}
    if card is not None:
        entry["card"] = card
    return entry


# -- the spec's examples and real clients' variants ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_documented_example_is_stored(client: TestClient, database_url: str, name: str) -> None:
    body = EXAMPLES[name]["value"]
    ok(client.post(FEEDBACK, json=body))
    assert len(stored(database_url)) == len(body["feedback"])


def test_spec_example_with_override_reason(client: TestClient, database_url: str) -> None:
    ok(client.post(FEEDBACK, json=EXAMPLES["overridden-with-reason"]["value"]))
    [row] = stored(database_url)
    assert row["card_uuid"] == "9368d37b-283f-44a0-93ea-547cebab93ed"
    assert row["outcome"] == "overridden"
    assert (row["reason_system"], row["reason_code"], row["reason_display"]) == (
        "https://example.com/cds-hooks/override-reason-system",
        "d7ecf885",
        None,
    )
    assert row["has_comment"] is True and row["user_comment"] is None  # comment text not kept by default


def test_spec_example_accepted_suggestion(client: TestClient, database_url: str) -> None:
    ok(client.post(FEEDBACK, json=EXAMPLES["accepted"]["value"]))
    [row] = stored(database_url)
    assert row["outcome"] == "accepted"
    assert row["accepted_suggestions"] == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    assert row["outcome_at"].isoformat().startswith("2021-12-11T10:05:31")


def test_epic_override_reasons_object_and_non_uuid_card(client: TestClient, database_url: str) -> None:
    reason = {"system": REASON_SYSTEM, "code": "cds-not-applicable", "display": "Does not apply"}
    ok(client.post(FEEDBACK, json={"feedback": [item("123456", overrideReasons={"reason": reason})]}))
    [row] = stored(database_url)
    assert row["card_uuid"] == "123456"
    assert (row["reason_code"], row["reason_display"]) == ("cds-not-applicable", "Does not apply")


def test_epic_override_reasons_list_and_numeric_card_id(client: TestClient, database_url: str) -> None:
    reasons = [
        {"reason": {"system": REASON_SYSTEM, "code": "not-convenient-feasible"}},
        {"reason": {"system": REASON_SYSTEM, "code": "does-not-align-preferences"}},
    ]
    ok(client.post(FEEDBACK, json={"feedback": [item(654321, overrideReasons=reasons)]}))  # type: ignore[arg-type]
    [row] = stored(database_url)
    assert row["card_uuid"] == "654321"
    assert [r["code"] for r in row["reasons"]] == ["not-convenient-feasible", "does-not-align-preferences"]
    assert row["reason_code"] == "not-convenient-feasible"


def test_epic_reason_given_only_by_its_extensions(client: TestClient, database_url: str) -> None:
    extension = {
        "com.epic.cdshooks.feedback.overrideReason.reasonCategory": "3",
        "com.epic.cdshooks.feedback.overrideReason.reasonDisplay": "Patient declines",
        "com.epic.cdshooks.feedback.overrideReason.reasonTitle": "Declined",
    }
    ok(client.post(FEEDBACK, json={"feedback": [item("123456", overrideReasons={"extension": extension})]}))
    [row] = stored(database_url)
    assert (row["reason_code"], row["reason_display"]) == ("3", "Patient declines")


def test_sandbox_dismissal_without_card_and_a_reason_without_display_gets_ours(
    client: TestClient, database_url: str
) -> None:
    ok(client.post(FEEDBACK, json=EXAMPLES["sandbox"]["value"]))
    [row] = stored(database_url)
    assert row["card_uuid"] is None
    assert row["reason_code"] == "recipient-disagrees-evidence"
    assert row["reason_display"] == "Disagree with the recommendation or its evidence"  # ours, filled in


def test_timestamp_without_zone_is_utc_and_unknown_members_are_ignored(
    client: TestClient, database_url: str
) -> None:
    body = {"feedback": [item(outcomeTimestamp="2026-01-15T12:05:00", extension={"x": 1}, junk=True)], "y": 2}
    ok(client.post(FEEDBACK, json=body))
    [row] = stored(database_url)
    assert row["outcome_at"].isoformat().startswith("2026-01-15T12:05:00")


# -- idempotency and batches --------------------------------------------------------------------------


def test_repeated_feedback_is_stored_once(client: TestClient, database_url: str) -> None:
    batch = {"feedback": [item("a"), item("b", "accepted", acceptedSuggestions=[{"id": "s1"}])]}
    ok(client.post(FEEDBACK, json=batch))
    ok(client.post(FEEDBACK, json=batch))  # the EHR retries
    ok(client.post(FEEDBACK, json={"feedback": [item("a"), item("a")]}))  # duplicated inside a batch
    assert len(stored(database_url)) == 2
    counts = client.app.state.cds.audit.counters()  # type: ignore[attr-defined]
    assert counts["feedback_stored"] == 2 and counts["feedback_duplicates"] >= 3


def test_a_different_time_or_suggestion_is_new_feedback(client: TestClient, database_url: str) -> None:
    ok(client.post(FEEDBACK, json={"feedback": [item("a", "accepted", acceptedSuggestions=[{"id": "s1"}])]}))
    ok(client.post(FEEDBACK, json={"feedback": [item("a", "accepted", acceptedSuggestions=[{"id": "s2"}])]}))
    ok(
        client.post(
            FEEDBACK, json={"feedback": [item("a", "accepted", outcomeTimestamp="2026-01-15T12:06:00Z")]}
        )
    )
    assert len(stored(database_url)) == 3


def test_suggestion_order_does_not_matter(client: TestClient, database_url: str) -> None:
    both = [{"id": "s1"}, {"id": "s2"}]
    ok(client.post(FEEDBACK, json={"feedback": [item("a", "accepted", acceptedSuggestions=both)]}))
    ok(client.post(FEEDBACK, json={"feedback": [item("a", "accepted", acceptedSuggestions=both[::-1])]}))
    assert len(stored(database_url)) == 1


# -- linked to the card and its call -----------------------------------------------------------------


def test_feedback_is_shown_under_its_card_and_counted(client: TestClient) -> None:
    card = client.post(URL, json=private_request()).json()["cards"][0]
    accepted = item(card["uuid"], "accepted", acceptedSuggestions=[{"id": card["suggestions"][0]["uuid"]}])
    reason = {"system": REASON_SYSTEM, "code": "cds-not-applicable", "display": "Does not apply"}
    overridden = item(
        card["uuid"], overrideReason={"reason": reason}, outcomeTimestamp="2026-01-15T12:07:00Z"
    )
    ok(client.post(FEEDBACK, json={"feedback": [accepted, overridden]}))
    flush(client)

    found = client.get(f"/audit/invocations?card={card['uuid']}", headers=AUDIT).json()["items"]
    assert [i["hook_instance"] for i in found] == ["11111111-2222-4333-8444-555555555555"]
    detail = client.get(f"/audit/invocations/{found[0]['hook_instance']}", headers=AUDIT).json()
    [shown] = detail["cards"]
    assert [f["outcome"] for f in shown["feedback"]] == ["accepted", "overridden"]
    assert shown["feedback"][0]["accepted_suggestions"] == [card["suggestions"][0]["uuid"]]
    assert shown["feedback"][1]["reasons"] == [reason]

    stats = client.get("/audit/stats", headers=AUDIT).json()
    ces = next(r for r in stats["rules"] if r["rule_id"] == "RF-CES")
    assert (ces["fired"], ces["cards"], ces["accepted"], ces["overridden"]) == (1, 1, 1, 1)
    assert ces["override_reasons"] == [{**reason, "cards": 1}]
    urgent = next(c for c in stats["categories"] if c["category"] == "urgent-referral")
    assert (urgent["cards"], urgent["indicators"], urgent["accepted"], urgent["overridden"]) == (
        1,
        {"critical": 1},
        1,
        1,
    )
    never = next(r for r in stats["rules"] if r["rule_id"] == "H-OA")
    assert never["fired"] == 0  # rules that never fired are listed too


def test_a_reason_sent_without_display_is_stored_and_shown_with_ours(client: TestClient) -> None:
    """The sandbox sends the reason Coding without ``display``: /audit/stats showed ``display: null``."""
    card = client.post(URL, json=private_request()).json()["cards"][0]
    offered = card["overrideReasons"][1]
    reason = {"system": offered["system"], "code": offered["code"]}
    ok(client.post(FEEDBACK, json={"feedback": [item(card["uuid"], overrideReason={"reason": reason})]}))
    flush(client)
    stats = client.get("/audit/stats", headers=AUDIT).json()
    ces = next(r for r in stats["rules"] if r["rule_id"] == "RF-CES")
    assert ces["override_reasons"] == [{**reason, "display": offered["display"], "cards": 1}]
    detail = client.get(f"/audit/invocations?card={card['uuid']}", headers=AUDIT).json()["items"][0]
    shown = client.get(f"/audit/invocations/{detail['hook_instance']}", headers=AUDIT).json()["cards"][0]
    assert shown["feedback"][0]["reasons"] == [{**reason, "display": offered["display"]}]


def test_feedback_that_arrives_before_the_calls_record_is_linked_later(client: TestClient) -> None:
    writer = client.app.state.cds.audit.writer  # type: ignore[attr-defined]
    card = client.post(URL, json=private_request()).json()["cards"][0]
    ok(client.post(FEEDBACK, json={"feedback": [item(card["uuid"])]}))  # the record may still be queued
    flush(client)
    assert writer.counters()["written"] == 1
    detail = client.get("/audit/invocations/11111111-2222-4333-8444-555555555555", headers=AUDIT).json()
    assert detail["cards"][0]["feedback"][0]["outcome"] == "overridden"


# -- refused ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"feedback": [item(outcome="ignored")]}, "feedback.0.outcome"),
        ({"feedback": [item(outcomeTimestamp="yesterday")]}, "feedback.0.outcomeTimestamp"),
        # valid ISO 8601, but outside the calendar once shifted to UTC (was a 500)
        ({"feedback": [item(outcomeTimestamp="0001-01-01T00:00:00+01:00")]}, "feedback.0.outcomeTimestamp"),
        ({"feedback": [item(outcomeTimestamp="9999-12-31T23:59:59-01:00")]}, "feedback.0.outcomeTimestamp"),
        ({"feedback": [{"card": "a", "outcome": "accepted"}]}, "feedback.0.outcomeTimestamp"),
        ({"feedback": "x"}, "feedback"),
        ({}, "feedback"),
    ],
)
def test_invalid_feedback_is_400_naming_the_field_and_stores_nothing(
    client: TestClient, database_url: str, body: dict[str, Any], where: str
) -> None:
    body = copy.deepcopy(body)
    if isinstance(body.get("feedback"), list):
        body["feedback"].insert(0, item("good-one"))  # a valid entry in the same batch
        where = where.replace("feedback.0", "feedback.1")
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(where in i.get("expression", []) for i in outcome["issue"]), outcome
    assert stored(database_url) == []


def test_unknown_service_is_404(client: TestClient) -> None:
    assert client.post("/cds-services/nope/feedback", json={"feedback": [item()]}).status_code == 404


def test_too_many_entries_is_413(tmp_path: Path, database_url: str) -> None:
    with open_client(audit_settings(tmp_path, database_url, feedback_max_items=2)) as client:
        response = client.post(FEEDBACK, json={"feedback": [item(str(i)) for i in range(3)]})
        assert response.status_code == 413


def test_feedback_needs_the_ehr_jwt_when_authentication_is_on(tmp_path: Path, database_url: str) -> None:
    from tests.security.helpers import ISS, KeyRing, ec_key

    key = ec_key("ec-1")
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([{"iss": ISS, "jwks": KeyRing.jwks(key)}]))
    settings = audit_settings(tmp_path, database_url, auth="required", trusted_clients_file=clients)
    with open_client(settings) as client:
        assert client.post(FEEDBACK, json={"feedback": [item()]}).status_code == 401
        assert client.post(FEEDBACK, json={"feedback": [item()]}, headers=AUDIT).status_code == 401
    assert stored(database_url) == []


def test_the_comment_text_is_stored_only_when_the_site_opts_in(tmp_path: Path, database_url: str) -> None:
    body = {"feedback": [item(overrideReason={"userComment": "  Already referred.  "})]}
    with open_client(audit_settings(tmp_path, database_url, audit_store_user_comments=True)) as client:
        ok(client.post(FEEDBACK, json=body))
    [row] = stored(database_url)
    assert row["user_comment"] == "Already referred." and row["has_comment"] is True


@pytest.mark.parametrize("path", ["/audit/invocations", "/audit/stats"])
def test_a_period_bound_outside_the_calendar_in_utc_is_400(client: TestClient, path: str) -> None:
    response = client.get(path, params={"since": "0001-01-01T00:00:00+01:00"}, headers=AUDIT)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
