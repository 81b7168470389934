"""A FHIR R4 ValueSet for each value set in ``rules/valuesets/``: ``compose`` as written, ``expansion`` as
the engine matches.

- ``compose``: one ``include`` per code system with its explicit codes; one ``include`` per prefix (FHIR
  ANDs the filters of one include, and our prefixes are alternatives); ``exclude`` entries likewise.
- Prefixes (ICD-10-CM, ATC) become ``regex`` filters on the code, not ``is-a``: some prefixes are not
  concepts of the code system (``W1`` stands for the falls W10-W19), and a prefix may allow only some 7th
  characters (``S72`` initial encounters A, B, C), which no hierarchy filter can say. The regular
  expression matches the whole canonical code (``S72.001A``) exactly when the engine matches it.
- ``expansion`` lists every explicit code the engine accepts for this value set (it asks the engine's
  own terminology, so exclusions and 7th-character limits apply). Codes under a prefix cannot be
  listed without the whole code system, which the service does not ship: such an expansion carries the
  ``valueset-unclosed`` extension and no ``total``.
- Codes a site added (``CDS_EXTRA_VALUESETS_DIR``) are in their own includes and expansion entries, each
  marked with the ``site-code`` extension, and the version gets ``+site``: the content is no longer the
  shipped one, so it must not share its ``url|version``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from cds_service.artefacts.common import (
    PUBLISHER,
    SITE_CODE,
    VALUESET_UNCLOSED,
    canonical,
    computable_name,
)
from cds_service.catalog import Catalog
from cds_service.engine.code_files import CodeEntry
from cds_service.engine.terminology import CodeSystem, Terminology

_SITE = [{"url": SITE_CODE, "valueBoolean": True}]
_CHAR = "[A-Z0-9]"


def valueset(catalog: Catalog, vs_id: str, generated: str) -> dict[str, Any]:
    """The ValueSet ``vs_id`` (must exist); ``generated``: the expansion timestamp (FHIR dateTime)."""
    vs = catalog.valueset_files[vs_id]
    terminology = catalog.engine.terminology
    site = catalog.files.site_codes.get(vs_id, ())
    entries = [(e, False) for e in vs.codes] + [(e, True) for e in site]
    include = _compose([(e, s) for e, s in entries if not e.exclude], terminology)
    exclude = _compose([(e, s) for e, s in entries if e.exclude], terminology)
    contains = _contains(vs_id, [(e, s) for e, s in entries if not e.exclude and e.code], terminology)
    closed = not any("filter" in i for i in include)
    expansion: dict[str, Any] = {"timestamp": generated}
    if closed:
        expansion["total"] = len(contains)
    else:
        expansion["extension"] = [{"url": VALUESET_UNCLOSED, "valueBoolean": True}]
    if contains:
        expansion["contains"] = contains
    resource: dict[str, Any] = {
        "resourceType": "ValueSet",
        "id": vs.id,
        "url": canonical("ValueSet", vs.id),
        "version": f"{vs.version}+site" if site else vs.version,
        "name": computable_name(vs.id),
        "title": vs.title,
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": _description(vs.description or vs.title, vs.sources, vs.not_at_sites, vs.value_kind),
    }
    if include:  # FHIR cannot say "no codes" in compose: a value set left empty for sites to fill has none
        resource["compose"] = {"include": include} | ({"exclude": exclude} if exclude else {})
    return resource | {"expansion": expansion}


def canonical_code(system: CodeSystem, raw: str) -> str:
    """The code as its code system writes it: ICD-10-CM with its dot (``r531`` -> ``R53.1``)."""
    code = system.normalise_code(raw)
    if system.normalise == "icd" and len(code) > 3:
        return f"{code[:3]}.{code[3:]}"
    return code


def prefix_regex(system: CodeSystem, prefix: str, seventh: Sequence[str] | None) -> str:
    """A regular expression matching the whole canonical code exactly when the engine's prefix match
    (with its 7th-character limit) accepts it."""
    if system.normalise != "icd":
        return re.escape(system.normalise_code(prefix)) + ".*"
    p = system.normalise_code(prefix)
    allowed = "[" + "".join(sorted(seventh)) + "]" if seventh else None
    if len(p) <= 3:
        head = re.escape(p) + (f"{_CHAR}{{{3 - len(p)}}}" if len(p) < 3 else "")
        if allowed is None:
            return head + rf"(\.{_CHAR}{{1,4}})?"
        return head + rf"(\.{_CHAR}{{1,3}}|\.{_CHAR}{{3}}{allowed})?"
    head = re.escape(p[:3]) + r"\." + re.escape(p[3:])
    if allowed is None:
        return head + f"{_CHAR}{{0,{7 - len(p)}}}"
    if len(p) >= 7:  # a whole code: its own 7th character decides
        if p[6] not in (seventh or ()):
            raise ValueError(f"prefix {prefix!r} excludes its own 7th character: it can never match")
        return head
    between = 6 - len(p)
    return head + f"({_CHAR}{{0,{between}}}|{_CHAR}{{{between}}}{allowed})"


def _system(terminology: Terminology, name: str) -> CodeSystem:
    found = terminology.systems.get(name) or terminology.system_for(name)
    if found is None:  # engine.compile refuses such a file before this runs
        raise ValueError(f"unknown code system {name!r}")
    return found


def _compose(entries: Iterable[tuple[CodeEntry, bool]], terminology: Terminology) -> list[dict[str, Any]]:
    concepts: dict[tuple[str, bool], dict[str, dict[str, Any]]] = {}
    filters: list[dict[str, Any]] = []
    for entry, site in entries:
        system = _system(terminology, entry.system)
        if entry.code is not None:
            code = canonical_code(system, entry.code)
            concept = {"code": code} | ({"display": entry.display} if entry.display else {})
            concepts.setdefault((system.uri, site), {}).setdefault(code, concept)
        elif entry.prefix is not None:
            regex = prefix_regex(system, entry.prefix, entry.seventh)
            include = {"system": system.uri, "filter": [{"property": "code", "op": "regex", "value": regex}]}
            filters.append(({"extension": _SITE} if site else {}) | include)
    explicit = [
        ({"extension": _SITE} if site else {}) | {"system": uri, "concept": list(bucket.values())}
        for (uri, site), bucket in concepts.items()
    ]
    return explicit + filters


def _contains(
    vs_id: str, entries: Iterable[tuple[CodeEntry, bool]], terminology: Terminology
) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    contains: list[dict[str, Any]] = []
    for entry, site in entries:
        system = _system(terminology, entry.system)
        code = canonical_code(system, entry.code or "")
        if (system.uri, code) in seen or vs_id not in terminology.match(system.uri, code).valuesets:
            continue
        seen.add((system.uri, code))
        item: dict[str, Any] = {"extension": _SITE} if site else {}
        item |= {"system": system.uri, "code": code}
        contains.append(item | ({"display": entry.display} if entry.display else {}))
    return contains


def _description(text: str, sources: Sequence[str], not_at_sites: Sequence[str], kind: str | None) -> str:
    lines = [text.strip()]
    if sources:
        lines.append(f"Sources: {', '.join(sources)}.")
    if not_at_sites:
        lines.append(
            "The service also leaves out findings whose body site matches one of these patterns, which a "
            f"value set cannot express: {', '.join(f'`{p}`' for p in not_at_sites)}."
        )
    if kind:
        lines.append(f"Observation values are read as `{kind}` (units and ranges: the service's quantities).")
    return "\n\n".join(lines)
