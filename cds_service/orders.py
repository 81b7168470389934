"""The FHIR R4 ServiceRequests cards suggest: built from rule data and validated with fhir.resources R4B.

Each order in ``rules/`` becomes a template validated once, when the rules load (an invalid order stops
the service like any other rule-file error). A card then only adds the references its call knows: the
patient (a validated FHIR id) and the Conditions that fired (FHIR ids only). Validating every
ServiceRequest on every call cost ~0.2 ms each, on the hot path, for the same result.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from cds_service.definitions import CategoriesFile
from cds_service.engine.compile import system_uri
from cds_service.engine.evaluate import CompiledRule
from cds_service.engine.model import OrderSpec, RuleFileError
from cds_service.engine.terminology import CodeSystem

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PLACEHOLDER = "Patient/placeholder"


def build_order_templates(
    categories: CategoriesFile,
    rules: Sequence[CompiledRule],
    systems: Mapping[str, CodeSystem],
    valuesets: Collection[str],
) -> dict[str, dict[str, Any]]:
    """Every order any card can suggest (order id -> draft ServiceRequest), validated with fhir.resources
    R4B; an invalid order, one id used for two orders, or an unknown ``drafted_as`` value set raises
    ``RuleFileError``."""
    templates: dict[str, dict[str, Any]] = {}
    specs = [(f"categories.yaml {c.code}", c.order) for c in categories.categories]
    specs += [(f"rule {r.id}", order) for r in rules for order in r.spec.orders]
    for where, order in specs:
        for code in order.codes:
            system_uri(systems, code.system, where)
        if order.drafted_as is not None and order.drafted_as not in valuesets:
            raise RuleFileError(
                f"{where}: order {order.id} drafted_as: unknown value set {order.drafted_as!r}"
            )
        try:
            template = order_template(order, systems)
        except ValidationError as exc:
            raise RuleFileError(
                f"{where}: order {order.id} is not a valid ServiceRequest: {exc.errors()[0]}"
            ) from exc
        if templates.setdefault(order.id, template) != template:
            raise RuleFileError(f"{where}: order id {order.id!r} is used for two different orders")
    return templates


def order_template(order: OrderSpec, systems: Mapping[str, CodeSystem]) -> dict[str, Any]:
    """The draft ServiceRequest for ``order``, validated (raises pydantic's ValidationError)."""
    data: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "priority": order.priority,
        "code": {
            "coding": [
                {
                    "system": systems[c.system].uri if c.system in systems else c.system,
                    "code": c.code,
                    "display": c.display,
                }
                for c in order.codes
            ],
            "text": order.label,
        },
        "subject": {"reference": _PLACEHOLDER},
    }
    if order.note:
        data["note"] = [{"text": order.note}]
    return ServiceRequest.model_validate(data).model_dump(mode="json", exclude_none=True)


def service_request(template: Mapping[str, Any], patient_id: str, reasons: Iterable[str]) -> dict[str, Any]:
    """The template for this patient, with the Conditions behind the recommendation as reasons."""
    if not _FHIR_ID.match(patient_id):
        raise ValueError("patient id is not a FHIR id")
    resource = {**template, "subject": {"reference": f"Patient/{patient_id}"}}
    references = [f"Condition/{rid}" for rid in dict.fromkeys(reasons) if _FHIR_ID.match(rid)][:10]
    if references:
        resource["reasonReference"] = [{"reference": ref} for ref in references]
    return resource
