"""An ActivityDefinition for every order a card can suggest, made from the validated ServiceRequest
templates the cards themselves use (``CardBook.order_templates``), so the two cannot differ.

A card's suggestion adds what only the call knows: the patient as ``subject`` and the Conditions behind
the recommendation as ``reasonReference``. The definition says so in words; it carries no
``dynamicValue`` because the service, not a FHIR engine, fills them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.artefacts.common import PUBLISHER, canonical, computable_name
from cds_service.catalog import Catalog
from cds_service.engine.model import RuleFile


def suggested_orders(catalog: Catalog, rule: RuleFile) -> list[str]:
    """The order ids a card for ``rule`` suggests, in the card's order: the categories' own orders
    (unless the rule turns them off), then the rule's (as ``cards._orders`` assembles them)."""
    ids: list[str] = []
    if rule.card.category_order:
        ids += [catalog.category(code).order.id for code in rule.recommends]
    ids += [order.id for order in rule.orders]
    return list(dict.fromkeys(ids))


def activity_definitions(catalog: Catalog) -> list[dict[str, Any]]:
    """One per order id, with the rules whose cards suggest it named in ``usage``."""
    suggested_by: dict[str, list[str]] = {}
    for compiled in catalog.rules:
        for order_id in suggested_orders(catalog, compiled.spec):
            suggested_by.setdefault(order_id, []).append(compiled.id)
    return [
        _activity(order_id, template, catalog.version, suggested_by.get(order_id, []))
        for order_id, template in catalog.cards.order_templates.items()
    ]


def _activity(order_id: str, template: Mapping[str, Any], version: str, rules: list[str]) -> dict[str, Any]:
    code = template["code"]
    notes = [n["text"] for n in template.get("note", []) if n.get("text")]
    description = " ".join(
        [
            f"{code.get('text', order_id)}: a draft ServiceRequest ({template.get('priority', 'routine')}).",
            *notes,
            "On a card the service adds the patient and the Conditions behind the recommendation.",
        ]
    )
    usage = (
        f"Suggested on the cards of {', '.join(rules)}."
        if rules
        else "Suggested on the cards of its category when a rule asks for the category's order."
    )
    return {
        "resourceType": "ActivityDefinition",
        "id": order_id,
        "url": canonical("ActivityDefinition", order_id),
        "version": version,
        "name": computable_name(order_id),
        "title": code.get("text", order_id),
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": description,
        "usage": usage,
        "kind": "ServiceRequest",
        "intent": template.get("intent", "order"),
        "priority": template.get("priority", "routine"),
        "code": code,
    }
