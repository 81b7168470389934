"""The card builder under worst cases: every rule of a category firing at once still gives a valid card."""

from __future__ import annotations

from datetime import date
from typing import get_args

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.cards import CardContext, build_cards
from cds_service.catalog import Catalog
from cds_service.engine.evaluate import Evaluation, RuleResult
from cds_service.engine.model import CategoryCode

CATEGORIES = list(get_args(CategoryCode))


def all_rules_firing(catalog: Catalog, category: str, red_flag: bool) -> Evaluation:
    results = tuple(RuleResult(r, True, True, (), ()) for r in catalog.rules if category in r.spec.recommends)
    return Evaluation(date(2026, 1, 15), True, None, red_flag, results, {category: results}, (), (), ())


# Physiotherapy never accompanies a red flag (policy suppression, tested in tests/clinical), so that
# combination is not generated.
COMBINATIONS = [(c, False) for c in CATEGORIES] + [(c, True) for c in CATEGORIES if c != "physiotherapy"]


@pytest.mark.parametrize(("category", "red_flag"), COMBINATIONS)
def test_every_category_with_all_its_rules_gives_a_valid_card(
    catalog: Catalog, category: str, red_flag: bool
) -> None:
    [card] = build_cards(
        all_rules_firing(catalog, category, red_flag),
        catalog.cards,
        CardContext("p1", "https://cds.example.org"),
    )
    assert 0 < len(card.summary) < 140
    assert card.source.topic is not None and card.source.topic.code == category
    assert card.selectionBehavior == "any"
    for suggestion in card.suggestions or []:
        assert suggestion.actions and len(suggestion.actions) == 1
        resource = suggestion.actions[0].resource
        assert resource is not None
        ServiceRequest.model_validate(resource)
        assert resource["subject"] == {"reference": "Patient/p1"}
    assert all(link.url.startswith("https://cds.example.org/rules/") for link in card.links or [])
    if red_flag and category != "urgent-referral":
        assert card.summary.startswith("After the emergency assessment")


def test_cards_are_ordered_by_indicator_then_category(catalog: Catalog) -> None:
    physio = all_rules_firing(catalog, "physiotherapy", False)
    mri = all_rules_firing(catalog, "mri-lumbar-spine", False)
    combined = Evaluation(
        date(2026, 1, 15),
        True,
        None,
        False,
        physio.results + mri.results,
        {"physiotherapy": physio.results, "mri-lumbar-spine": mri.results},
        (),
        (),
        (),
    )
    cards = build_cards(combined, catalog.cards, CardContext("p1", "https://cds.example.org"))
    assert [c.indicator.value for c in cards] == ["warning", "info"]


@pytest.mark.parametrize("category", [c for c in CATEGORIES if c != "urgent-referral"])
def test_every_card_without_a_red_flag_prompts_for_the_symptoms_patients_do_not_volunteer(
    catalog: Catalog, category: str
) -> None:
    """Knowledge §8 S3: the card text prompts for saddle, bladder, bowel and sexual symptoms even when no
    red-flag rule fires; the red-flag cards carry their own advice instead."""
    evaluation = all_rules_firing(catalog, category, red_flag=False)
    non_red = tuple(r for r in evaluation.results if r.rule.spec.pathway != "red-flag")
    evaluation = Evaluation(date(2026, 1, 15), True, None, False, non_red, {category: non_red}, (), (), ())
    [card] = build_cards(evaluation, catalog.cards, CardContext("p1", "https://cds.example.org"))
    assert card.detail is not None
    for symptom in ("bladder", "bowel", "saddle", "sexual"):
        assert symptom in card.detail, (category, symptom)
    [urgent] = build_cards(
        all_rules_firing(catalog, "urgent-referral", red_flag=True),
        catalog.cards,
        CardContext("p1", "https://x.org"),
    )
    assert catalog.policy.safety_prompt and catalog.policy.safety_prompt not in (urgent.detail or "")
