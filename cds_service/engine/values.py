"""An Observation's value as the rules read it: present or absent, a coded answer, or a number in the
canonical unit of its kind (``rules/quantities.yaml``). Never guessed: a value without a known unit, out
of the plausible range or not a whole grade is reported, not used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cds_service.engine.fhir_read import codings_of, display_of, has_value
from cds_service.engine.records import QuantityKind, StatusPolicy
from cds_service.engine.terminology import Terminology

#: The code system (``rules/code-systems.yaml`` key) whose codes ``Quantity.code`` must be in.
UCUM = "ucum"


class ValueReader:
    """Reads Observation values; one per rule set (no request state)."""

    def __init__(
        self,
        terminology: Terminology,
        status: StatusPolicy,
        kinds: Mapping[str, QuantityKind],
        negative_valueset: str,
    ) -> None:
        self.terminology = terminology
        self.status = status
        self.kinds_by_vs = {
            vs.id: kinds[vs.value_kind]
            for vs in terminology.valuesets.values()
            if vs.value_kind is not None and vs.value_kind in kinds
        }
        self.negative_valueset = negative_valueset

    def observation_value(
        self, res: dict[str, Any], valuesets: frozenset[str], problems: list[str]
    ) -> dict[str, Any] | None:
        """The value fields of an Observation record, or None (with a problem) when it cannot be read."""
        kind = next((self.kinds_by_vs[v] for v in valuesets if v in self.kinds_by_vs), None)
        if "dataAbsentReason" in res and not has_value(res):
            return {"present": False, "value_text": "no result (dataAbsentReason)"}
        if "valueBoolean" in res:
            value = res["valueBoolean"]
            if not isinstance(value, bool):
                problems.append("valueBoolean is not a boolean")
                return None
            return {"present": value, "value_text": str(value).lower()}
        if "valueCodeableConcept" in res:
            return self._coded_value(res["valueCodeableConcept"], kind, problems)
        if kind is None:
            text = res.get("valueString")
            said = self.status.answer(text) if isinstance(text, str) else None
            if said is not None:
                return {"present": said, "value_text": str(text)[:60]}
            if "valueString" in res or ("valueInteger" in res and not isinstance(res["valueInteger"], int)):
                problems.append("value cannot be interpreted as present or absent")
                return None
            return {}  # coded finding without value (or with a quantity): present
        number, shown, problem = read_number(res, kind, self._is_ucum)
        if problem is not None:
            problems.append(problem)
            return None
        return {"number": number, "value_text": shown}

    def _coded_value(
        self, concept: object, kind: QuantityKind | None, problems: list[str]
    ) -> dict[str, Any] | None:
        codings = codings_of(concept)
        valuesets, _, first, usable = self.terminology.match_codings(codings)
        text = concept.get("text") if isinstance(concept, dict) else None
        said = self.status.answer(text) if isinstance(text, str) and not usable else None
        fields: dict[str, Any] = {
            "value_codes": valuesets,
            "value_text": first[1] if first else display_of(concept, codings),
            "present": self.negative_valueset not in valuesets and said is not False,
        }
        if kind is None or (valuesets and not kind.coded_values):
            return fields
        if not kind.coded_values:  # a number is expected, and the code means nothing the rules know
            problems.append(f"coded value {fields['value_text']!r} is not a {kind.id} value")
            return None
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system = self.terminology.system_for(coding.get("system"))
            code = coding.get("code")
            if system is not None and isinstance(code, str):
                number = kind.coded_values.get((system.uri, code.strip()))
                if number is not None:
                    return fields | {"number": number, "value_text": f"{code} ({number:g})"}
        if not valuesets:
            problems.append(f"coded value {fields['value_text']!r} is not a recognised {kind.id} value")
            return None
        return fields

    def _is_ucum(self, system: object) -> bool:
        found = self.terminology.system_for(system if isinstance(system, str) else None)
        return found is not None and found.key == UCUM


def read_number(
    res: Mapping[str, Any], kind: QuantityKind, is_ucum: Callable[[object], bool]
) -> tuple[float | None, str | None, str | None]:
    """Value in the kind's canonical unit, its display, or the reason it cannot be read (never guessed).
    ``Quantity.code`` is read as a UCUM code when ``system`` is absent or names UCUM (``is_ucum``)."""
    unit: str | None = None
    if "valueQuantity" in res:
        q = res["valueQuantity"]
        if not isinstance(q, dict):
            return None, None, "valueQuantity is not an object"
        raw = q.get("value")
        system = q.get("system")
        code = q.get("code") if system is None or is_ucum(system) else None
        unit = code if isinstance(code, str) else None
        if unit is None and isinstance(q.get("unit"), str) and q["unit"] in kind.units:
            unit = q["unit"]  # the human unit spelled exactly as a UCUM code we know
        if unit is None and q.get("unit") is not None and not kind.unitless_ok:
            return None, None, f"unit {str(q.get('unit'))[:20]!r} has no UCUM code"
    elif "valueInteger" in res:
        raw = res["valueInteger"]
    else:
        present = [k for k in res if k.startswith("value")]
        return None, None, f"no numeric value ({', '.join(present) or 'no value'})"
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None, None, f"value {str(raw)[:20]!r} is not a number"
    value = float(raw)
    if unit is None or unit in ("1", ""):
        if not kind.unitless_ok:
            return None, None, f"{kind.id} value {value:g} has no unit; not guessed"
        factor, offset = 1.0, 0.0
        shown = f"{value:g}"
    else:
        conversion = kind.units.get(unit)
        if conversion is None:
            return None, None, f"unit {unit[:20]!r} is not a known {kind.id} unit"
        factor, offset = conversion
        shown = f"{value:g} {unit}"
    canonical = value * factor + offset
    low, high = kind.plausible
    if not low <= canonical <= high:
        return None, None, f"{kind.id} {shown} is implausible; not used"
    if kind.integers_only and canonical != int(canonical):
        return None, None, f"{kind.id} {shown} is not a whole grade"
    if unit not in (None, "1", "", kind.canonical_unit):
        shown += f" = {canonical:.1f} {kind.display_unit}"
    return canonical, shown, None
