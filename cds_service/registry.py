"""Load and validate the files in ``rules/`` (and a site's extra codes) once, at start-up.

This module only reads files: YAML into the pydantic shapes of ``engine.model`` and ``definitions``,
plus the checks that span files (unique ids, a site file extending a value set that exists, each of the
six categories once, every required prefetch key with a template). Anything wrong raises
``RuleFileError`` naming the file and the field, and the service does not start. ``engine.compile``
turns the result into an engine; ``catalog`` assembles what the service offers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cds_service.definitions import CategoriesFile, ProfilesFile, ServicesFile
from cds_service.engine.code_files import (
    CodeEntry,
    CodeSystemsFile,
    CodeSystemSpec,
    ExtraCodesFile,
    QuantitiesFile,
    StatusFile,
    ValueSetFile,
)
from cds_service.engine.model import PolicyFile, RuleFile, RuleFileError

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster

__all__ = ["RuleFileError", "RuleFiles", "load_rule_files"]


@dataclass(frozen=True)
class RuleFiles:
    """Every file of ``rules/``, validated; nothing compiled yet."""

    version: str  # content hash of all files read: recorded with every evaluation
    systems: Mapping[str, CodeSystemSpec]  # shipped and site code systems
    valuesets: Mapping[str, ValueSetFile]
    sources: Mapping[str, Path]  # value set id -> its file
    site_codes: Mapping[str, tuple[CodeEntry, ...]]  # value set id -> codes a site added
    quantities: QuantitiesFile
    status: StatusFile
    categories: CategoriesFile
    policy: PolicyFile
    services: ServicesFile
    profiles: ProfilesFile
    rules: Mapping[str, tuple[RuleFile, Path]]  # rule id -> (rule, its file)


def load_rule_files(rules_dir: Path, extra_valuesets_dir: Path | None = None) -> RuleFiles:
    """Read and validate every file. Raises ``RuleFileError`` on the first problem."""
    rules_dir = Path(rules_dir)
    digest = hashlib.sha256()
    systems_file = _load(rules_dir / "code-systems.yaml", CodeSystemsFile, digest)
    site_files = [
        (path, _load(path, ExtraCodesFile, digest))
        for path in (sorted(Path(extra_valuesets_dir).glob("*.yaml")) if extra_valuesets_dir else [])
    ]
    systems = dict(systems_file.systems)
    for path, site in site_files:
        for key, declared in site.systems.items():
            if key in systems and systems[key] != declared:
                raise RuleFileError(f"{path}: code system {key!r} is already declared differently")
            systems[key] = declared

    valuesets: dict[str, ValueSetFile] = {}
    sources: dict[str, Path] = {}
    for path in sorted((rules_dir / "valuesets").glob("*.yaml")):
        vs = _load(path, ValueSetFile, digest)
        if vs.id in valuesets:
            raise RuleFileError(f"{path}: value set id {vs.id!r} also defined in {sources[vs.id]}")
        valuesets[vs.id] = vs
        sources[vs.id] = path
    site_codes: dict[str, list[CodeEntry]] = {}
    for path, site in site_files:
        if site.extends not in valuesets:
            raise RuleFileError(f"{path}: extends unknown value set {site.extends!r}")
        site_codes.setdefault(site.extends, []).extend(site.codes)
        logger.info("site codes: %d added to value set %s from %s", len(site.codes), site.extends, path.name)

    quantities = _load(rules_dir / "quantities.yaml", QuantitiesFile, digest)
    status = _load(rules_dir / "status.yaml", StatusFile, digest)
    categories = _load(rules_dir / "categories.yaml", CategoriesFile, digest)
    if len({c.code for c in categories.categories}) != 6:
        raise RuleFileError("categories.yaml: each of the six categories must appear exactly once")
    policy = _load(rules_dir / "policy.yaml", PolicyFile, digest)
    services = _load(rules_dir / "services.yaml", ServicesFile, digest)
    profiles = _load(rules_dir / "ehr-profiles.yaml", ProfilesFile, digest)
    known_keys = {key for profile in profiles.profiles.values() for key in profile.keys}
    for service in services.services:
        for key in service.required_prefetch:
            if key not in service.prefetch:
                raise RuleFileError(
                    f"services.yaml {service.id}: required_prefetch {key!r} is not in prefetch"
                )
        for key in service.prefetch:
            if key not in known_keys:
                raise RuleFileError(f"services.yaml {service.id}: prefetch {key!r} is in no EHR profile")

    rules: dict[str, tuple[RuleFile, Path]] = {}
    for path in sorted((rules_dir / "pathways").rglob("*.yaml")):
        spec = _load(path, RuleFile, digest)
        if spec.id in rules:
            raise RuleFileError(f"{path}: rule id {spec.id!r} also defined in {rules[spec.id][1]}")
        rules[spec.id] = (spec, path)
    return RuleFiles(
        version=digest.hexdigest()[:12],
        systems=systems,
        valuesets=valuesets,
        sources=sources,
        site_codes={k: tuple(v) for k, v in site_codes.items()},
        quantities=quantities,
        status=status,
        categories=categories,
        policy=policy,
        services=services,
        profiles=profiles,
        rules=rules,
    )


def _load(path: Path, model: type[M], digest: Any) -> M:
    try:
        raw_bytes = path.read_bytes()
        data = yaml.load(raw_bytes, Loader=_YAML_LOADER)
    except FileNotFoundError as exc:
        raise RuleFileError(f"{path}: file is missing") from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path}: not valid YAML: {exc}") from exc
    digest.update(path.name.encode() + b"\0" + raw_bytes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RuleFileError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s))") from exc
