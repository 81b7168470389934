"""The only place cards are built: one card per recommendation category, listing every reason.

Inputs are the engine's ``Evaluation`` and the category/rule texts from ``rules/``. Each card carries:
a summary under 140 characters; a GitHub-flavoured markdown ``detail`` naming the findings that fired
(with dates) and what to do; ``source`` pointing at the first rule's evidence with the category as
``topic``; suggestions that each create one FHIR R4 ``ServiceRequest`` (validated with fhir.resources R4B)
with ``selectionBehavior: any`` (Epic accepts only that); override reasons; links to the rules' pages.
The highest card also lists the data the engine could not use where it could hide a red flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from cds_service.definitions import CategoriesFile, CategorySpec
from cds_service.engine.evaluate import DataNote, Evaluation, RuleResult
from cds_service.engine.model import OrderSpec, PolicyFile
from cds_service.engine.records import Record
from cds_service.engine.terminology import Terminology
from cds_service.orders import service_request
from cds_service.schemas import (
    FHIR_ID,
    Action,
    Card,
    Coding,
    Indicator,
    Link,
    OverrideReason,
    Source,
    Suggestion,
)

SUMMARY_LIMIT = 139
IdFactory = Callable[[], str]


def new_id() -> str:
    return str(uuid4())


@dataclass(frozen=True)
class CardBook:
    """What cards are made of, built once at start-up: category texts and orders, the policy's category
    order and safety prompt, the validated order templates, and code-system labels for findings."""

    categories: CategoriesFile
    policy: PolicyFile
    order_templates: Mapping[str, dict[str, Any]]  # order id -> validated draft ServiceRequest
    terminology: Terminology

    def category(self, code: str) -> CategorySpec:
        return next(c for c in self.categories.categories if c.code == code)


@dataclass(frozen=True)
class CardContext:
    """Per-call inputs the builder needs besides the evaluation."""

    patient_id: str
    base_url: str  # absolute, no trailing slash: rule documentation links
    extra_notes: Sequence[DataNote] = ()  # e.g. optional prefetch that could not be obtained
    id_factory: IdFactory = new_id
    drafts: Sequence[Sequence[Mapping[str, Any]]] = ()  # order hooks: each draft order's codings


def build_cards(evaluation: Evaluation, book: CardBook, ctx: CardContext) -> list[Card]:
    """Cards for every emitted category, highest indicator first."""
    drafts: list[tuple[int, int, Card]] = []
    order: list[str] = list(book.policy.category_order)
    for code, results in evaluation.categories.items():
        category = book.category(code)
        indicator = _indicator(category, results)
        subordinate = evaluation.red_flag and indicator is not Indicator.critical
        card = _card(category, results, indicator, subordinate, book, ctx)
        drafts.append((-indicator.rank, order.index(code), card))
    drafts.sort(key=lambda d: (d[0], d[1]))
    cards = [card for _, _, card in drafts]
    notes = [n for n in (*evaluation.notes, *ctx.extra_notes) if n.red_flag]
    if cards and notes:
        top = cards[0]
        cards[0] = top.model_copy(update={"detail": f"{top.detail}\n\n{_notes_section(notes)}"})
    return cards


def _indicator(category: CategorySpec, results: Sequence[RuleResult]) -> Indicator:
    """The highest of each rule's indicator (its own, else the category's)."""
    return max(
        (Indicator(r.rule.spec.indicator or category.indicator) for r in results), key=lambda i: i.rank
    )


def _card(
    category: CategorySpec,
    results: Sequence[RuleResult],
    indicator: Indicator,
    subordinate: bool,
    book: CardBook,
    ctx: CardContext,
) -> Card:
    first = results[0].rule.spec
    evidence = next((e for r in results for e in r.rule.spec.evidence if e.url), first.evidence[0])
    suggestions = [
        _suggestion(o, results, book, ctx)
        for o in _orders(category, results)
        if not _already_drafted(o, book.terminology, ctx.drafts)
    ]
    for result in results:
        if result.rule.spec.withdraw_drafts:
            suggestions += [
                _withdraw(d, ctx)
                for d in result.evidence
                if d.resource_type == "ServiceRequest" and d.id and FHIR_ID.fullmatch(d.id)
            ]
    links = [
        Link(
            label=f"Rule {r.rule.id}: {r.rule.spec.name}"[:120],
            url=f"{ctx.base_url}/rules/{r.rule.id}",
            type="absolute",
        )
        for r in results
    ]
    return Card(
        uuid=ctx.id_factory(),
        summary=_summary(category, results, subordinate),
        detail=_detail(category, results, subordinate, book),
        indicator=indicator,
        source=Source(
            label=evidence.label[:200],
            url=evidence.url,
            topic=Coding(system=book.categories.topic_system, code=category.code, display=category.display),
        ),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=[
            OverrideReason(system=book.categories.override_reason_system, code=o.code, display=o.display)
            for o in book.categories.override_reasons
        ],
        links=links,
    )


def _summary(category: CategorySpec, results: Sequence[RuleResult], subordinate: bool) -> str:
    own = results[0].rule.spec.card.summary
    if own and not subordinate:
        return own.replace("{ordered}", _ordered(results[0]))[:SUMMARY_LIMIT]
    template = (
        category.subordinate_summary if subordinate and category.subordinate_summary else category.summary
    )
    shorts = list(dict.fromkeys(r.rule.spec.card.short for r in results))
    for shown in range(len(shorts), 0, -1):
        reasons = ", ".join(shorts[:shown]) + (f" +{len(shorts) - shown} more" if shown < len(shorts) else "")
        text = template.format(reasons=reasons)
        if len(text) <= SUMMARY_LIMIT:
            return text
    return template.format(reasons=f"{len(shorts)} findings")[:SUMMARY_LIMIT]


def _detail(category: CategorySpec, results: Sequence[RuleResult], subordinate: bool, book: CardBook) -> str:
    lines: list[str] = []
    if subordinate:
        lines += ["_Non-urgent: only after the emergency assessment on the critical card._", ""]
    lines.append("**Why**")
    for result in results:
        lines.append(f"- {result.rule.spec.card.reason}")
        lines += [f"  - {_finding(r, book)}" for r in result.evidence[:12]]
        if len(result.evidence) > 12:
            lines.append(f"  - ... and {len(result.evidence) - 12} more")
    # A rule with its own summary questions the category (an order that may not be indicated): the
    # category's advice ("MRI of the lumbar spine ...") would contradict it, so its own advice replaces it.
    own_message = any(r.rule.spec.card.summary for r in results)
    category_advice = [] if own_message else list(category.advice)
    advice = list(dict.fromkeys([a for r in results for a in r.rule.spec.card.advice] + category_advice))
    policy = book.policy
    if policy.safety_prompt and all(r.rule.spec.pathway != policy.red_flag_pathway for r in results):
        advice.append(policy.safety_prompt)
    if advice:
        lines += ["", "**What to do**", *[f"- {a}" for a in advice]]
    sources = dict.fromkeys(f"{r.rule.id} v{r.rule.spec.version}" for r in results)
    lines += ["", f"_Rules: {', '.join(sources)}. Decision support only: use clinical judgement._"]
    return "\n".join(lines)


def _finding(r: Record, book: CardBook) -> str:
    system = book.terminology.system_for(r.code[0]) if r.code else None
    code = f"{system.label if system else ''} {r.code[1]}".strip() if r.code else ""
    when = "date unknown" if r.date is None else f"{r.date_source} {r.date.iso()}"
    value = f" = {_escape(r.value_text)}" if r.value_text and r.resource_type == "Observation" else ""
    side = f", {r.laterality}" if r.laterality else ""
    return f"{_escape(r.display)}{value} ({r.resource_type} {code}{side}; {when})"


def _notes_section(notes: Iterable[DataNote]) -> str:
    lines = ["**Data the service could not use (could hide a red flag; please check)**"]
    lines += [f"- {_escape(n.text)}" for n in list(notes)[:15]]
    return "\n".join(lines)


def _escape(text: str | None) -> str:
    """Neutralise markdown/HTML control characters in EHR-supplied text shown in ``detail``."""
    if not text:
        return ""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    for ch in "\\`*_[]<>|#":
        cleaned = cleaned.replace(ch, "\\" + ch)
    return cleaned[:160]


def _orders(category: CategorySpec, results: Sequence[RuleResult]) -> list[OrderSpec]:
    wanted = any(r.rule.spec.card.category_order for r in results)
    orders = {category.order.id: category.order} if wanted else {}
    for result in results:
        for order in result.rule.spec.orders:
            orders.setdefault(order.id, order)
    return list(orders.values())


def _ordered(result: RuleResult) -> str:
    """The labels of the draft-order criteria that matched: "MRI", "MRI and CT"."""
    labels = list(dict.fromkeys(t.label for t in result.leaves if t.fact == "draft_order" and t.passed))
    if len(labels) < 2:
        return labels[0] if labels else "imaging"
    return f"{', '.join(labels[:-1])} and {labels[-1]}"


def _already_drafted(
    order: OrderSpec, terminology: Terminology, drafts: Sequence[Sequence[Mapping[str, Any]]]
) -> bool:
    """A draft order carries one of ``order``'s codes, or a code of its ``drafted_as`` value set: the
    clinician is already ordering it, and a second suggestion would create a duplicate."""
    own = {(c.system, c.code) for c in order.codes}
    for codings in drafts:
        for coding in codings:
            system = terminology.system_for(coding.get("system"))
            key = system.key if system is not None else coding.get("system")
            if (key, coding.get("code")) in own:
                return True
        if order.drafted_as and order.drafted_as in terminology.match_codings(codings).valuesets:
            return True
    return False


def _suggestion(
    order: OrderSpec, results: Sequence[RuleResult], book: CardBook, ctx: CardContext
) -> Suggestion:
    reasons = (r.id for res in results for r in res.evidence if r.resource_type == "Condition" and r.id)
    resource = service_request(book.order_templates[order.id], ctx.patient_id, reasons)
    return Suggestion(
        label=order.label,
        uuid=ctx.id_factory(),
        isRecommended=True if order.recommended else None,
        actions=[Action(type="create", description=order.label, resource=resource)],
    )


def _withdraw(draft: Record, ctx: CardContext) -> Suggestion:
    """A suggestion to delete a drafted order. Only for drafts with a valid id: a delete action names its
    target by ``resourceId`` (cds-resp-2), and a draft without one (a ``urn:uuid`` fullUrl only) cannot be
    named; the card and its other suggestions are still returned."""
    label = f"Remove the drafted order: {draft.display}"[:120]
    return Suggestion(
        label=label,
        uuid=ctx.id_factory(),
        actions=[Action(type="delete", description=label, resourceId=draft.ref())],
    )
