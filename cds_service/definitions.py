"""The shape of ``rules/services.yaml`` and ``rules/categories.yaml``: what the service offers and how
its cards are worded. Validated at start-up by ``registry``; read by discovery, the orchestrator and the
card builder, never by the engine (which knows rules, value sets and policy only).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from cds_service.engine.model import (
    CategoryCode,
    Identifier,
    IndicatorName,
    OrderSpec,
    Pathway,
    Strict,
)


class OverrideReasonSpec(Strict):
    code: str
    display: str


class CategorySpec(Strict):
    code: CategoryCode
    display: str
    indicator: IndicatorName
    summary: str = Field(description="Summary template; {reasons} is replaced by the rules' short texts.")
    subordinate_summary: str | None = Field(
        None, description="Summary used when a red flag is present (non-urgent work-up after the emergency)."
    )
    advice: list[str] = Field(default_factory=list)
    order: OrderSpec


class CategoriesFile(Strict):
    topic_system: str
    override_reason_system: str
    override_reasons: list[OverrideReasonSpec] = Field(min_length=1)
    categories: list[CategorySpec] = Field(min_length=6, max_length=6)


class ServiceSpec(Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")]
    hook: Literal["patient-view", "order-select", "order-sign"]
    title: str
    description: str
    usage_requirements: str
    prefetch: dict[Identifier, str]
    required_prefetch: list[Identifier] = Field(default_factory=list)
    emit_pathways: list[Pathway]


class ServicesFile(Strict):
    cds_hooks_version: str
    services: list[ServiceSpec] = Field(min_length=1)
