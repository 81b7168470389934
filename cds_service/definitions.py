"""The shape of ``rules/services.yaml``, ``rules/ehr-profiles.yaml`` and ``rules/categories.yaml``: what
the service offers, how it asks an EHR for data, and how its cards are worded. Validated at start-up by
``registry``; read by discovery, the orchestrator, prefetch and the card builder, never by the engine
(which knows rules, value sets and policy only). ``Service`` and ``KeyPlan`` are the assembled, runtime
form: a service with the queries of the deployment's EHR profile (built by ``prefetch.derive``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    prefetch: list[Identifier] = Field(description="The data the service reads: key names of the profile.")
    required_prefetch: list[Identifier] = Field(default_factory=list)
    emit_pathways: list[Pathway]


class ServicesFile(Strict):
    cds_hooks_version: str
    services: list[ServiceSpec] = Field(min_length=1)


class QuerySpec(Strict):
    """One prefetch key of a profile: its query template, and what to try when the server refuses it."""

    query: str
    fallbacks: list[str | list[str]] = Field(
        default_factory=list,
        description="Alternatives in order: one query, or a list of queries run together. A query with "
        "{category} runs once per category.",
    )


class ProfileSpec(Strict):
    title: str
    description: str
    code_token: Literal["code", "system"] = Field(
        description="`code`: bare codes (any system); `system`: system|code tokens."
    )
    max_query_length: int = Field(ge=200, le=8000, description="Longest percent-encoded query string.")
    max_page_size: int = Field(ge=1, le=5000, description="Largest _count the server accepts.")
    categories: dict[str, str] = Field(
        default_factory=dict, description="Value-set category -> this server's Observation category."
    )
    keys: dict[Identifier, QuerySpec]


class ProfilesFile(Strict):
    profiles: dict[Identifier, ProfileSpec] = Field(min_length=1)


@dataclass(frozen=True)
class KeyPlan:
    """How one prefetch key is obtained: the template discovery publishes, the fallbacks (each a group of
    templates run together), and in words what it asks for (for the 412 or the card)."""

    key: str
    query: str
    fallbacks: tuple[tuple[str, ...], ...] = ()
    about: str = ""


@dataclass(frozen=True)
class Service:
    """A CDS service as this deployment runs it: its definition plus the profile's prefetch plan."""

    spec: ServiceSpec
    plans: Mapping[str, KeyPlan]  # prefetch key -> plan, in discovery order
    required: frozenset[str]  # keys without which the entry criterion cannot be established

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def hook(self) -> str:
        return self.spec.hook

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def usage_requirements(self) -> str:
        return self.spec.usage_requirements

    @property
    def emit_pathways(self) -> list[Pathway]:
        return self.spec.emit_pathways

    @property
    def prefetch(self) -> dict[str, str]:
        """Key -> template, as discovery publishes it."""
        return {key: plan.query for key, plan in self.plans.items()}
