"""Prefetch plans derived from the rules, for one EHR profile (``rules/ehr-profiles.yaml``).

Nothing here is hand-written per code: the Observation codes are those of every value set some rule
matches against ``Observation.code`` (site codes from ``CDS_EXTRA_VALUESETS_DIR`` included), less the value
sets and code systems whose files say they are not searched that way (``search.observation_codes``,
``observation_codes``); the categories are those the value sets declare and the profile's server knows.
A code list longer than the profile's URL budget is split over several keys (``observationCodes1``, 2, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from cds_service.definitions import KeyPlan, ProfileSpec, QuerySpec, Service, ServiceSpec
from cds_service.engine.compile import system_uri
from cds_service.engine.engine import Engine
from cds_service.engine.model import RuleFileError
from cds_service.prefetch.templates import escape_token, longest_rendering
from cds_service.registry import RuleFiles

CODES, CATEGORIES, CATEGORY = "{codes}", "{categories}", "{category}"


def derive_services(files: RuleFiles, engine: Engine, profile_name: str) -> tuple[Service, ...]:
    """Every service of ``services.yaml`` with the queries of the chosen profile."""
    profile = files.profiles.profiles.get(profile_name)
    if profile is None:
        known = ", ".join(sorted(files.profiles.profiles))
        raise RuleFileError(f"ehr-profiles.yaml: no profile {profile_name!r} (known: {known})")
    codes = observation_tokens(files, engine, profile)
    categories = observation_categories(files, engine, profile)
    return tuple(_service(spec, profile, profile_name, codes, categories) for spec in files.services.services)


def observation_tokens(files: RuleFiles, engine: Engine, profile: ProfileSpec) -> list[str]:
    """Search tokens for every code the rules read on Observations, grouped by value set, no repeats."""
    tokens: dict[str, None] = {}
    searchable = {spec.uri for spec in files.systems.values() if spec.observation_codes}
    terminology = engine.terminology
    for vs_id in sorted(engine.code_valuesets("Observation")):
        search = files.valuesets[vs_id].search
        if not search.observation_codes:
            continue
        codes = [(e.system, e.code) for e in terminology.valuesets[vs_id].entries if not e.exclude]
        codes += [(system_uri(terminology.systems, p.system, vs_id), p.code) for p in search.panel_codes]
        for system, code in codes:
            if code is None or system not in searchable:
                continue  # a prefix (ICD-10-CM S72) cannot be a token
            token = escape_token(code)
            tokens[token if profile.code_token == "code" else f"{system}|{token}"] = None
    return list(tokens)


def observation_categories(files: RuleFiles, engine: Engine, profile: ProfileSpec) -> list[str]:
    """The server's categories for what the rules' Observation value sets declare, in profile order."""
    declared = {
        category
        for vs_id in engine.code_valuesets("Observation")
        for category in files.valuesets[vs_id].search.observation_categories
    }
    return list(dict.fromkeys(ours for theirs, ours in profile.categories.items() if theirs in declared))


def _service(
    spec: ServiceSpec,
    profile: ProfileSpec,
    profile_name: str,
    codes: Sequence[str],
    categories: Sequence[str],
) -> Service:
    plans: dict[str, KeyPlan] = {}
    required: set[str] = set()
    for key in spec.prefetch:
        query = profile.keys.get(key)
        if query is None:
            if key in spec.required_prefetch:
                raise RuleFileError(
                    f"ehr-profiles.yaml {profile_name}: has no query for {key!r}, which service "
                    f"{spec.id} requires"
                )
            continue  # the server has no such data (Epic: MedicationStatement)
        for plan in _plans(key, query, profile, codes, categories):
            plans[plan.key] = plan
            if key in spec.required_prefetch:
                required.add(plan.key)
    return Service(spec, plans, frozenset(required))


def _plans(
    key: str, spec: QuerySpec, profile: ProfileSpec, codes: Sequence[str], categories: Sequence[str]
) -> list[KeyPlan]:
    """One plan, or one per chunk of codes; none when the query needs categories and there are none."""
    if (CATEGORIES in spec.query and not categories) or (CODES in spec.query and not codes):
        return []  # nothing to ask for: no key (an empty token list would be refused, or match all)
    filled = spec.query.replace(CATEGORIES, ",".join(categories))
    if CODES not in filled:
        shown = categories if CATEGORIES in spec.query else []
        return [KeyPlan(key, filled, _fallbacks(spec, categories, ""), _about(filled, shown, 0))]
    chunks = _chunks(filled, codes, profile.max_query_length)
    names = [key] if len(chunks) == 1 else [f"{key}{i}" for i in range(1, len(chunks) + 1)]
    return [
        KeyPlan(
            name, filled.replace(CODES, chunk), _fallbacks(spec, categories, chunk), _about(filled, [], n)
        )
        for name, chunk, n in zip(names, chunks, (c.count(",") + 1 for c in chunks), strict=True)
    ]


def _fallbacks(spec: QuerySpec, categories: Sequence[str], codes: str) -> tuple[tuple[str, ...], ...]:
    groups: list[tuple[str, ...]] = []
    for alternative in spec.fallbacks:
        queries = [alternative] if isinstance(alternative, str) else alternative
        group: list[str] = []
        for query in queries:
            query = query.replace(CATEGORIES, ",".join(categories)).replace(CODES, codes)
            group += [query.replace(CATEGORY, c) for c in categories] if CATEGORY in query else [query]
        if group:
            groups.append(tuple(group))
    return tuple(groups)


def _chunks(template: str, tokens: Sequence[str], budget: int) -> list[str]:
    """Comma-joined token lists, each keeping the percent-encoded query string within ``budget``
    (every character that may be encoded counted as encoded; the patient id counted at its longest)."""
    fixed = _encoded_length(longest_rendering(template.replace(CODES, "")))
    chunks: list[list[str]] = [[]]
    used = fixed
    for token in tokens:
        cost = _encoded_length(token) + (3 if chunks[-1] else 0)  # "%2C" between tokens
        if chunks[-1] and used + cost > budget:
            chunks.append([])
            used, cost = fixed, _encoded_length(token)
        if fixed + cost > budget:
            raise RuleFileError(f"ehr-profiles.yaml: code {token!r} alone exceeds max_query_length")
        chunks[-1].append(token)
        used += cost
    return [",".join(chunk) for chunk in chunks if chunk] or [""]


def _encoded_length(text: str) -> int:
    query = text.split("?", 1)[1] if "?" in text else text
    return len(quote(query, safe="=&"))


def _about(query: str, categories: Sequence[str], codes: int) -> str:
    """In words, for a 412 or a card: which data a key stands for."""
    resource = query.split("?", 1)[0].split("/", 1)[0]
    if codes:
        return f"{resource}s with one of {codes} codes the rules read"
    if categories:
        return f"{resource}s in the categories {', '.join(categories)}"
    return "the Patient" if "?" not in query else f"every {resource} of the patient"
