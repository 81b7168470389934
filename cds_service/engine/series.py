"""Facts over numeric series: the latest MRC grade per side, a decline between grades, the maximum
temperature, a percent weight fall. Ordering never depends on a Bundle's order: same-day values without
times are equally recent, and every candidate for "latest" is tried.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cds_service.engine.context import Context, FactValue, in_window
from cds_service.engine.params import QuantityParams, ScoreParams, WindowParams
from cds_service.engine.records import Record, Status


def _numbers(ctx: Context, p: WindowParams) -> tuple[list[Record], list[tuple[Record, float | None]]]:
    """Numeric observations in the value set: (dated and inside the window, undated). A record without a
    date is never "dated", whatever the window: ordering and windows need a date."""
    dated: list[Record] = []
    undated: list[tuple[Record, float | None]] = []
    for r in ctx.with_valuesets(p.valuesets):
        if r.resource_type != "Observation" or r.status is not Status.current or r.number is None:
            continue
        if r.date is None:
            undated.append((r, r.number))
        elif in_window(r, p, ctx):
            dated.append(r)
    return dated, undated


def _by_side(records: Iterable[Record]) -> dict[str | None, list[Record]]:
    sides: dict[str | None, list[Record]] = {}
    for r in records:
        sides.setdefault(r.laterality, []).append(r)
    return sides


def _sort_key(r: Record) -> tuple[datetime, datetime]:
    assert r.date is not None
    return (r.date.earliest, r.date.latest)


def _before(a: Record, b: Record) -> bool:
    """``a`` certainly happened before ``b``. Two date-only values are calendar days of the sending
    system, compared by day; two timed values by their moments; a date-only value against a timed one
    allows for the unknown zone of the day (``FhirDate.earliest``/``latest``)."""
    da, db = a.date, b.date
    assert da is not None and db is not None
    if da.at is None and db.at is None:
        return da.end < db.start
    if da.at is not None and db.at is not None:
        return da.at < db.at
    return da.latest < db.earliest


def _latest_candidates(records: Sequence[Record]) -> list[Record]:
    """The dated records that may be the most recent: those not certainly before another one (the same
    day without times, overlapping partial dates, a day against a time of that day). Linear: a record is
    before some other one exactly when it is before the newest date-only one or the newest timed one."""
    dated = [r for r in records if r.date is not None]
    days = [r for r in dated if r.date and r.date.at is None]
    timed = [r for r in dated if r.date and r.date.at is not None]
    newest = [max(group, key=_sort_key) for group in (days, timed) if group]
    return [r for r in dated if not any(_before(r, n) for n in newest)]


def _latest(records: Sequence[Record]) -> Record:
    """The most recent of dated numeric records; among equally recent ones the lowest value (a worse
    grade, a lower weight), ties broken by id, so that the answer never depends on a Bundle's order."""
    return min(_latest_candidates(records), key=_low_first)


def _low_first(r: Record) -> tuple[float, str]:
    return (r.number if r.number is not None else math.inf, r.id or "")


def _largest_fall(records: Sequence[Record]) -> tuple[Record, Record] | None:
    """(earlier, latest) with the largest fall from a value certainly before a possibly-latest value to
    it: every candidate for "latest" is tried, so an ambiguous order can only reveal a decline."""
    best: tuple[float, Record, Record] | None = None
    distinct: dict[tuple[Any, ...], Record] = {}  # same value at the same time: the same answer
    for r in sorted(_latest_candidates(records), key=_low_first):
        assert r.date is not None
        distinct.setdefault((r.number, r.date.start, r.date.end, r.date.at), r)
    for latest in distinct.values():
        earlier = [r for r in records if _before(r, latest)]
        if not earlier or latest.number is None:
            continue
        top = max(earlier, key=lambda r: (r.number if r.number is not None else -math.inf, r.id or ""))
        assert top.number is not None
        if best is None or top.number - latest.number > best[0]:
            best = (top.number - latest.number, top, latest)
    return None if best is None else (best[1], best[2])


def _side_groups(records: Sequence[Record], per_side: bool) -> list[list[Record]]:
    """Records compared with each other: per body side, where a bilateral record belongs to the left and
    the right, and a record of unknown side joins every side (and forms a group of its own); or all
    together."""
    if not per_side:
        return [list(records)] if records else []
    sides = _by_side(records)
    unknown = sides.pop(None, [])
    both = sides.pop("bilateral", [])
    lateral = [side + both + unknown for side in sides.values()]
    groups = lateral or ([both + unknown] if both else [])
    return [*groups, unknown] if unknown else groups


def latest_score(ctx: Context, p: ScoreParams) -> FactValue:
    """Lowest over body sides of each side's latest score (MRC grade). The evidence is, per side, the
    latest observation plus the earlier ones of the same episode (consecutive values <= ``episode_max``).
    A side with only undated scores uses its lowest undated score (§4.4: undated findings count for HW).
    Scores of the same day without times count as equally recent: the lowest is the latest."""
    dated, undated = _numbers(ctx, p)
    groups = _by_side(dated) if p.per_side else ({None: dated} if dated else {})
    values: list[float] = []
    evidence: list[Record] = []
    for side_records in groups.values():
        latest = _latest(side_records)
        assert latest.number is not None
        values.append(latest.number)
        evidence.append(latest)
        if p.episode_max is not None and latest.number <= p.episode_max:
            earlier_ones = sorted((r for r in side_records if _before(r, latest)), key=_sort_key)
            for earlier in reversed(earlier_ones):
                if earlier.number is None or earlier.number > p.episode_max:
                    break
                evidence.append(earlier)
    loose = [r for r, _ in undated]
    undated_groups = _by_side(loose) if p.per_side else ({None: loose} if loose else {})
    for side, side_records in undated_groups.items():
        if side not in groups:
            best = min(side_records, key=lambda r: r.number if r.number is not None else 99.0)
            assert best.number is not None
            values.append(best.number)
            evidence.append(best)
    if not values:
        return FactValue(None)
    return FactValue(min(values), tuple(evidence))


def score_decline(ctx: Context, p: ScoreParams) -> FactValue:
    """How far the latest score (MRC grade) in the window is below the highest earlier one (knowledge
    §4.3: "latest lower than an earlier one"), per side (a score of unknown side compared with every
    side). Two scores of the same day are ordered by their times; without times they are equally recent."""
    dated, _ = _numbers(ctx, p)
    best: float | None = None
    pair: tuple[Record, ...] = ()
    for group in _side_groups(dated, p.per_side):
        found = _largest_fall(group)
        if found is None:
            continue
        top, latest = found
        assert top.number is not None and latest.number is not None
        drop = max(top.number - latest.number, 0.0)
        if best is None or drop > best:
            best, pair = drop, ((top, latest) if drop > 0 else ())
    return FactValue(best, pair)


def quantity(ctx: Context, p: QuantityParams) -> FactValue:
    """The max, min or latest value (canonical unit) of an Observation in the window."""
    dated, undated = _numbers(ctx, p)
    if not p.windowed and p.aggregate != "latest":
        dated = dated + [r for r, _ in undated]  # no time condition: an undated value counts too
        undated = []
    if not dated:
        return FactValue(None, (), tuple(undated))
    if p.aggregate == "latest":
        chosen = _latest(dated)
    else:
        pick = max if p.aggregate == "max" else min
        chosen = pick(dated, key=lambda r: r.number or 0.0)
    return FactValue(chosen.number, (chosen,), tuple(undated))


def quantity_drop_percent(ctx: Context, p: WindowParams) -> FactValue:
    """Percent fall from the highest earlier value to the latest value inside the window (weight loss)."""
    dated, _ = _numbers(ctx, p)
    found = _largest_fall(dated) if len(dated) >= 2 else None
    if found is None:
        return FactValue(None)
    top, latest = found
    assert top.number and latest.number is not None
    return FactValue(round(100.0 * (top.number - latest.number) / top.number, 2), (top, latest))
