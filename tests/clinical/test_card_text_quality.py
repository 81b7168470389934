"""No card's advice contradicts its summary: checked over every rule, every category it recommends and the
texts in rules/ (a data-quality test: a new rule or category text is held to it without a new test).

The finding behind it: the order-check card said the lumbar MRI "needs its indication checked" while its
"what to do" listed the MRI category's "MRI of the lumbar spine without contrast (ACR ... variant 3)". The
mechanism (cards.py): a rule with its own summary speaks for the card, so the category's advice and order
are left off it and the rule's advice replaces them.
"""

from __future__ import annotations

import re
from datetime import date

from cds_service.cards import CardContext, build_cards
from cds_service.catalog import Catalog
from cds_service.engine.evaluate import CompiledLeaf, CompiledRule, Evaluation, LeafTrace, RuleResult
from cds_service.schemas import Card
from tests.support import ROOT

#: Words with which a summary questions the order or the category's action instead of advising it.
QUESTIONS = re.compile(
    r"check the indication|may not be (indicated|needed)|not (routinely )?indicated|advises? against|"
    r"do not (routinely )?(order|offer|image)|not needed",
    re.IGNORECASE,
)


def rules_and_categories(catalog: Catalog) -> list[tuple[str, str]]:
    return [(r.id, c) for r in catalog.rules for c in r.spec.recommends]


def card_of(catalog: Catalog, rule: CompiledRule, category: str) -> Card:
    """The card ``rule`` makes alone for ``category``, every draft-order criterion matched."""
    leaves = tuple(
        LeafTrace(leaf.label, "draft_order", {}, True, True, ())
        for leaf in _leaves(rule)
        if leaf.spec.name == "draft_order"
    )
    result = RuleResult(rule, True, True, (), leaves)
    evaluation = Evaluation(
        date(2026, 1, 15), True, None, False, (result,), {category: (result,)}, (), (), ()
    )
    [card] = build_cards(evaluation, catalog.cards, CardContext("p1", "https://cds.example.org"))
    return card


def _leaves(rule: CompiledRule) -> list[CompiledLeaf]:
    stack, out = [rule.when], []
    while stack:
        node = stack.pop()
        if node.leaf is not None:
            out.append(node.leaf)
        stack.extend(node.children)
    return out


def what_to_do(card: Card) -> list[str]:
    detail = card.detail or ""
    section = detail.split("**What to do**", 1)[1] if "**What to do**" in detail else ""
    return [line[2:] for line in section.split("\n_Rules:")[0].splitlines() if line.startswith("- ")]


def test_the_catalog_has_rules_that_question_an_order(catalog: Catalog) -> None:
    """Guard: the checks below must have something to check."""
    assert any(r.spec.card.summary and QUESTIONS.search(r.spec.card.summary) for r in catalog.rules)


def test_no_card_advises_what_its_summary_questions(catalog: Catalog) -> None:
    checked = 0
    for rule_id, code in rules_and_categories(catalog):
        rule = catalog.rule(rule_id)
        assert rule is not None
        category = catalog.category(code)
        card = card_of(catalog, rule, code)
        advice = what_to_do(card)
        offered = {s.label for s in card.suggestions or []}
        where = f"{rule_id} on the {code} card"
        if QUESTIONS.search(card.summary):
            checked += 1
            assert not set(category.advice) & set(advice), f"{where}: the category's advice contradicts it"
            assert category.order.label not in offered, f"{where}: offers the order its summary questions"
            for line in advice:
                assert not re.match(r"(order|request|arrange) ", line, re.IGNORECASE), f"{where}: {line}"
        if category.order.label not in offered and rule.spec.card.summary:
            assert not set(category.advice) & set(advice), f"{where}: advises the order it does not offer"
    assert checked


def test_a_rule_that_questions_its_category_does_not_offer_the_categorys_order(catalog: Catalog) -> None:
    for rule in catalog.rules:
        summary = rule.spec.card.summary or ""
        if QUESTIONS.search(summary):
            assert not rule.spec.card.category_order, rule.id
            assert not rule.spec.orders, rule.id


def test_every_summary_placeholder_can_be_filled(catalog: Catalog) -> None:
    """``{ordered}`` names the draft orders that matched: only a rule with draft-order criteria may use it,
    and no other placeholder is read."""
    for rule in catalog.rules:
        summary = rule.spec.card.summary or ""
        assert set(re.findall(r"{(\w*)}", summary)) <= {"ordered"}, rule.id
        if "{ordered}" in summary:
            assert any(leaf.spec.name == "draft_order" for leaf in _leaves(rule)), rule.id
            assert "{" not in card_of(catalog, rule, rule.spec.recommends[0]).summary


def test_category_texts_do_not_question_their_own_advice() -> None:
    """The categories' own summaries advise (``... advised``); none questions what its advice says."""
    text = (ROOT / "rules" / "categories.yaml").read_text()
    summaries = re.findall(r'^\s+(?:subordinate_)?summary: "(.*)"$', text, re.MULTILINE)
    assert summaries
    assert not [s for s in summaries if QUESTIONS.search(s)]
