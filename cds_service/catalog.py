"""What the service offers, assembled once at start-up from ``rules/``: the CDS services, the compiled
engine, the card book, and the validated files themselves (for the rule and value-set documentation).

``load_catalog`` is the one place the three steps meet: ``registry`` reads the files, ``engine.compile``
builds the engine, ``orders`` validates every order a card can suggest. An invalid file stops the
service with one message naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cds_service.cards import CardBook
from cds_service.definitions import CategoriesFile, CategorySpec, Service
from cds_service.engine.code_files import ValueSetFile
from cds_service.engine.compile import build_engine
from cds_service.engine.engine import Engine
from cds_service.engine.evaluate import CompiledRule
from cds_service.engine.model import PolicyFile
from cds_service.orders import build_order_templates
from cds_service.prefetch.derive import derive_services
from cds_service.registry import RuleFiles, load_rule_files


class UnknownService(LookupError):
    """No CDS service with this id."""

    def __init__(self, service_id: str) -> None:
        super().__init__(service_id)
        self.service_id = service_id


@dataclass(frozen=True)
class Catalog:
    """Immutable, shared by every request."""

    files: RuleFiles
    engine: Engine
    cards: CardBook
    services: tuple[Service, ...]
    profile: str  # the EHR query profile the services' prefetch plans are for

    @property
    def version(self) -> str:
        """Content hash of every rule file: recorded with each evaluation."""
        return self.files.version

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        return self.engine.rules

    @property
    def max_page_size(self) -> int:
        """The largest ``_count`` the profile's server accepts."""
        return self.files.profiles.profiles[self.profile].max_page_size

    @property
    def policy(self) -> PolicyFile:
        return self.engine.policy

    @property
    def categories(self) -> CategoriesFile:
        return self.files.categories

    @property
    def cds_hooks_version(self) -> str:
        return self.files.services.cds_hooks_version

    @property
    def valueset_files(self) -> Mapping[str, ValueSetFile]:
        return self.files.valuesets

    @property
    def override_reason_displays(self) -> dict[tuple[str, str], str]:
        """The override reasons every card offers: ``(system, code) -> display``."""
        cats = self.categories
        return {(cats.override_reason_system, o.code): o.display for o in cats.override_reasons}

    def service(self, service_id: str) -> Service:
        for spec in self.services:
            if spec.id == service_id:
                return spec
        raise UnknownService(service_id)

    def rule(self, rule_id: str) -> CompiledRule | None:
        return self.engine.rule(rule_id)

    def category(self, code: str) -> CategorySpec:
        return self.cards.category(code)


def load_catalog(
    rules_dir: Path, extra_valuesets_dir: Path | None = None, profile: str = "generic"
) -> Catalog:
    """Read, validate and compile everything. Raises ``RuleFileError`` on the first problem."""
    files = load_rule_files(rules_dir, extra_valuesets_dir)
    engine = build_engine(
        systems=files.systems,
        valuesets=files.valuesets,
        sources=files.sources,
        site_codes=files.site_codes,
        quantities=files.quantities,
        status=files.status,
        policy=files.policy,
        rules=files.rules,
    )
    templates = build_order_templates(
        files.categories, engine.rules, engine.terminology.systems, engine.terminology.valuesets
    )
    book = CardBook(files.categories, files.policy, templates, engine.terminology)
    return Catalog(files, engine, book, derive_services(files, engine, profile), profile)
