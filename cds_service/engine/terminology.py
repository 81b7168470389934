"""Code systems and value sets: which concepts a (system, code) pair belongs to.

Matching is on (system, code) only, never on display text (knowledge base, codes.md "Matching advice").
- System URIs are normalised through the aliases declared in ``rules/code-systems.yaml`` (OIDs, SNOMED
  edition URIs) and compared without regard to case or ``https``, so a coding variant cannot hide a red
  flag.
- ICD-10-CM codes are compared without dots, upper-case, by prefix (``S72`` matches ``S72.001A``); a value
  set entry can restrict the 7th character (``seventh: [A, B, C]``: initial encounter only).
- ``exclude: true`` entries win over includes (``S76.0`` strains are not trauma).

Lookups are cached per (system, code): real prefetches repeat the same LOINC codes hundreds of times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class CodeSystem:
    key: str
    uri: str
    label: str = ""
    aliases: tuple[str, ...] = ()
    uri_prefixes: tuple[str, ...] = ()
    prefix_matching: bool = False
    normalise: str = "strip"  # strip | icd

    def normalise_code(self, code: str) -> str:
        code = code.strip()
        if self.normalise == "icd":
            return code.replace(".", "").replace(" ", "").upper()
        return code


@dataclass(frozen=True, slots=True)
class ValueSetEntry:
    system: str  # canonical URI
    code: str | None = None  # normalised exact code
    prefix: str | None = None  # normalised prefix (prefix-matching systems only)
    seventh: frozenset[str] | None = None
    exclude: bool = False
    laterality: str | None = None
    display: str | None = None
    source_code: str = ""  # as written in the rule file, for documentation


@dataclass(frozen=True, slots=True)
class ValueSet:
    id: str
    version: str
    title: str
    entries: tuple[ValueSetEntry, ...]
    value_kind: str | None = None
    description: str = ""
    sources: tuple[str, ...] = ()
    not_at_sites: tuple[str, ...] = ()  # bodySite patterns that take a finding out of this value set


@dataclass(frozen=True, slots=True)
class Match:
    """The value sets a coding belongs to, and the laterality its code implies (e.g. 'right hip')."""

    valuesets: frozenset[str]
    laterality: str | None = None


NO_MATCH = Match(frozenset())


class CodingLike(Protocol):
    """A coding as a decoder holds it before any dict exists (``hookbody``'s typed structures)."""

    @property
    def system(self) -> object: ...

    @property
    def code(self) -> object: ...


class Matched(NamedTuple):
    """What a CodeableConcept's codings mean to the rules."""

    valuesets: frozenset[str]
    laterality: str | None
    first: tuple[str, str] | None  # the first (system, code) that matched, for the trace
    usable: bool  # some coding has a non-empty string system and code


@dataclass
class Terminology:
    """Immutable after construction apart from the lookup cache (a pure function of its inputs)."""

    systems: Mapping[str, CodeSystem]
    valuesets: Mapping[str, ValueSet]
    _by_uri: dict[str, CodeSystem] = field(init=False)
    _prefixes: list[tuple[str, CodeSystem]] = field(init=False)
    _exact: dict[tuple[str, str], list[ValueSetEntry]] = field(init=False)
    _prefix: dict[tuple[str, str], list[ValueSetEntry]] = field(init=False)
    _vs_of_entry: dict[int, str] = field(init=False)
    _cache: dict[tuple[str, str], Match] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_uri = {}
        for system in self.systems.values():
            for uri in (system.uri, *system.aliases):
                self._by_uri[_clean_uri(uri)] = system
        self._prefixes = [
            (_clean_uri(p, prefix=True), system)
            for system in self.systems.values()
            for p in system.uri_prefixes
        ]
        self._exact, self._prefix, self._vs_of_entry = {}, {}, {}
        for vs in self.valuesets.values():
            for entry in vs.entries:
                self._vs_of_entry[id(entry)] = vs.id
                if entry.code is not None:
                    self._exact.setdefault((entry.system, entry.code), []).append(entry)
                elif entry.prefix is not None:
                    self._prefix.setdefault((entry.system, entry.prefix), []).append(entry)

    def system_for(self, uri: str | None) -> CodeSystem | None:
        """The code system a coding's ``system`` URI denotes, through aliases; None when unknown."""
        if not uri or not isinstance(uri, str):
            return None
        found = self._by_uri.get(uri)  # the usual spelling: no clean-up needed
        if found is not None:
            return found
        cleaned = _clean_uri(uri)
        found = self._by_uri.get(cleaned)
        if found is not None:
            return found
        for uri_prefix, system in self._prefixes:
            if cleaned.startswith(uri_prefix):
                return system
        return None

    def match(self, system_uri: object, code: object) -> Match:
        """Value sets containing this coding (after exclusions and 7th-character rules)."""
        if not isinstance(system_uri, str) or not isinstance(code, str) or not code.strip():
            return NO_MATCH
        key = (system_uri, code)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._match_uncached(system_uri, code)
        if len(self._cache) > 200_000:  # bounded: a hostile client cannot grow it without limit
            self._cache.clear()
        self._cache[key] = result
        return result

    def _match_uncached(self, system_uri: str, code: str) -> Match:
        system = self.system_for(system_uri)
        if system is None:
            return NO_MATCH
        norm = system.normalise_code(code)
        candidates: list[ValueSetEntry] = list(self._exact.get((system.uri, norm), ()))
        if system.prefix_matching:
            for end in range(1, len(norm) + 1):
                candidates.extend(self._prefix.get((system.uri, norm[:end]), ()))
        if not candidates:
            return NO_MATCH
        seventh = norm[6] if system.normalise == "icd" and len(norm) == 7 else None
        included: dict[str, ValueSetEntry] = {}
        excluded: set[str] = set()
        for entry in candidates:
            vs_id = self._vs_of_entry[id(entry)]
            if entry.exclude:
                excluded.add(vs_id)
            elif entry.seventh is None or seventh is None or seventh in entry.seventh:
                included.setdefault(vs_id, entry)
        valuesets = frozenset(v for v in included if v not in excluded)
        lateralities = {included[v].laterality for v in valuesets if included[v].laterality}
        laterality = lateralities.pop() if len(lateralities) == 1 else None
        return Match(valuesets, laterality)

    def match_codings(self, codings: Iterable[object]) -> Matched:
        """Union of value sets over a CodeableConcept's codings, the laterality, the first matched pair,
        and whether any coding was usable at all. The engine's hot loop: every resource of a prefetch
        passes here once, so the cache is read directly."""
        found: frozenset[str] = frozenset()
        laterality: str | None = None
        first: tuple[str, str] | None = None
        usable = False
        cache = self._cache
        for coding in codings:
            if type(coding) is not dict:
                continue
            system, code = coding.get("system"), coding.get("code")
            if type(system) is not str or type(code) is not str:
                continue
            usable = usable or not (system.isspace() or code.isspace() or not system or not code)
            m = cache.get((system, code)) or self.match(system, code)
            if m.valuesets:
                found = found | m.valuesets
                laterality = laterality or m.laterality
                if first is None:
                    first = (system, code)
        return Matched(found, laterality, first, usable)

    def worth_reading(self, codings: Iterable[CodingLike]) -> bool:
        """Whether a concept's codings could mean something to the rules: one is in a value set, or none
        is usable at all (then it is reported). ``match_codings`` without building its answer, over
        objects with ``system`` and ``code`` attributes: a decoder calls it for every resource of a
        prefetch before any dict exists."""
        usable = False
        cache = self._cache
        for coding in codings:
            system, code = coding.system, coding.code
            if type(system) is not str or type(code) is not str:
                continue
            usable = usable or not (system.isspace() or code.isspace() or not system or not code)
            if (cache.get((system, code)) or self.match(system, code)).valuesets:
                return True
        return not usable


def _clean_uri(uri: str, *, prefix: bool = False) -> str:
    """A system URI as compared: trimmed, without a trailing slash, lower-case, ``https`` read as ``http``.

    FHIR system URIs are case-sensitive, but no two code systems differ only by case or scheme, while
    feeds do send ``HTTP://SNOMED.INFO/SCT`` or ``https://snomed.info/sct``: read strictly, such a
    spelling would hide a red flag.
    """
    cleaned = uri.strip().lower()
    if not prefix:
        cleaned = cleaned.rstrip("/")
    return "http://" + cleaned[8:] if cleaned.startswith("https://") else cleaned
