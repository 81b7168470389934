"""Per-rule and per-category statistics: how often a rule fired, its cards were accepted or overridden, why.

Counts are over the calls in the period. Feedback is counted per distinct card (clients send feedback for
the same card more than once, and Epic may batch it again), so "accepted" is the number of cards with at
least one accepted entry, and each override reason counts the distinct cards overridden with it. A card
is linked to the rules that produced it (``audit_cards.rule_ids``), so a rule's acceptance is that of the
cards it contributed to. Every rule of the loaded rule set is listed, also those that never fired: for a
reviewer a rule that never fires is a finding too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_service.audit.feedback import Reason, with_display
from cds_service.audit.views import CategoryStats, ReasonCount, RuleStats, StatsResponse
from cds_service.catalog import Catalog

ReasonKey = tuple[str | None, str | None, str | None]


@dataclass
class _Outcomes:
    cards: int = 0
    accepted: set[str] = field(default_factory=set)
    overridden: set[str] = field(default_factory=set)
    commented: set[str] = field(default_factory=set)
    reasons: dict[ReasonKey, set[str]] = field(default_factory=dict)

    def add(self, row: Any, displays: Mapping[tuple[str, str], str]) -> None:
        if row.outcome == "accepted":
            self.accepted.add(row.uuid)
            return
        self.overridden.add(row.uuid)
        if row.has_comment:
            self.commented.add(row.uuid)
        if row.reason_code or row.reason_display:
            # rows stored before displays were filled in at storage get them here
            reason = with_display(Reason(row.reason_system, row.reason_code, row.reason_display), displays)
            key = (reason.system, reason.code, reason.display)
            self.reasons.setdefault(key, set()).add(row.uuid)

    def fields(self) -> dict[str, Any]:
        reasons = sorted(self.reasons.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
        return {
            "cards": self.cards,
            "accepted": len(self.accepted),
            "overridden": len(self.overridden),
            "with_comment": len(self.commented),
            "override_reasons": [
                ReasonCount(system=s, code=c, display=d, cards=len(ids)) for (s, c, d), ids in reasons
            ],
        }


def build_stats(
    catalog: Catalog,
    counts: Mapping[str, Any],
    feedback_rows: Iterable[Any],
    *,
    since: datetime | None,
    until: datetime | None,
    service: str | None,
) -> StatsResponse:
    rules: dict[str, _Outcomes] = {r.id: _Outcomes() for r in catalog.rules}
    fired: Counter[str] = Counter()
    versions: dict[str, set[str]] = {r.id: set() for r in catalog.rules}
    pathways: dict[str, str] = {r.id: r.spec.pathway for r in catalog.rules}
    for rule_id, version, pathway, n in counts["fired"]:
        fired[rule_id] += n
        versions.setdefault(rule_id, set()).add(version)
        pathways.setdefault(rule_id, pathway)
        rules.setdefault(rule_id, _Outcomes())
    for rule_ids in counts["rule_cards"]:
        for rule_id in _ids(rule_ids):
            rules.setdefault(rule_id, _Outcomes()).cards += 1

    order = list(catalog.policy.category_order)
    categories: dict[str, _Outcomes] = {c: _Outcomes() for c in order}
    indicators: dict[str, Counter[str]] = {c: Counter() for c in order}
    for category, indicator, n in counts["shown"]:
        categories.setdefault(category, _Outcomes()).cards += n
        indicators.setdefault(category, Counter())[indicator] += n

    displays = catalog.override_reason_displays
    for row in feedback_rows:
        categories.setdefault(row.category, _Outcomes()).add(row, displays)
        for rule_id in _ids(row.rule_ids):
            rules.setdefault(rule_id, _Outcomes()).add(row, displays)

    return StatsResponse(
        since=since,
        until=until,
        service=service,
        invocations=counts["invocations"],
        rules=[
            RuleStats(
                rule_id=rule_id,
                versions=sorted(versions.get(rule_id, ())),
                pathway=pathways.get(rule_id),
                fired=fired[rule_id],
                **outcomes.fields(),
            )
            for rule_id, outcomes in rules.items()
        ],
        categories=[
            CategoryStats(category=c, indicators=dict(indicators.get(c, Counter())), **o.fields())
            for c, o in categories.items()
        ],
        feedback_without_card=counts["feedback_without_card"],
        feedback_unmatched=counts["feedback_unmatched"],
    )


def _ids(value: Sequence[str] | None) -> list[str]:
    return [str(v) for v in value or []]
