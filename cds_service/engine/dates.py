"""FHIR date/dateTime values as day intervals, compared fail-safe.

A FHIR date may be partial (``2024``, ``2024-05``). It is kept as the interval of days it can mean:
recency checks ("within the last 14 days") use the latest possible day, ordering ("earliest onset") the
earliest. So a partial date can only make a time window *more* inclusive, never hide a red flag.
Windows count calendar days in UTC: ``T-14d`` is inside "within 14 days" whatever the time of day.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d{1,9})?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


_EAST, _WEST = timedelta(hours=14), timedelta(hours=12)  # the widest zone offsets in use


@dataclass(frozen=True, slots=True)
class FhirDate:
    start: date
    end: date
    text: str  # the value as sent, for card text and the trace
    at: datetime | None = None  # the UTC moment (naive), when the value has a time: orders a day's values

    @property
    def earliest(self) -> datetime:
        """The first UTC moment this value can mean (ordering two observations of one day needs times).
        A value without a time is a calendar day in an unknown zone (UTC-12 to UTC+14), so it can start
        14 hours before that day in UTC and end 12 hours after it."""
        return self.at or datetime.combine(self.start, time.min) - _EAST

    @property
    def latest(self) -> datetime:
        """The last UTC moment this value can mean."""
        return self.at or datetime.combine(self.end, time.max) + _WEST

    @property
    def partial(self) -> bool:
        return self.start != self.end

    def days_before(self, today: date) -> int:
        """Days from the latest day this value can mean to ``today`` (0 = today; negative = future)."""
        return (today - self.end).days

    def until(self, today: date) -> FhirDate:
        """This value without the days after ``today`` (a partial date covering today cannot mean a day
        that has not come yet; ``start`` is kept, so a window still sees the whole interval)."""
        return FhirDate(self.start, max(self.start, min(self.end, today)), self.text, self.at)

    def iso(self) -> str:
        return self.start.isoformat() if not self.partial else self.text


class DateProblem(ValueError):
    """A date that is present but cannot be read (the caller records it; it is never guessed)."""


def parse_fhir_date(value: object) -> FhirDate:
    """Parse a FHIR date/dateTime/instant into a day interval (UTC days)."""
    if not isinstance(value, str):
        raise DateProblem(f"not a date string: {type(value).__name__}")
    text = value.strip()
    m = _DATE_RE.match(text)
    if m is None:
        raise DateProblem(f"not a FHIR date: {text[:40]!r}")
    try:
        year = int(m["y"])
        if m["m"] is None:
            return FhirDate(date(year, 1, 1), date(year, 12, 31), text)
        month = int(m["m"])
        if m["d"] is None:
            last = calendar.monthrange(year, month)[1]
            return FhirDate(date(year, month, 1), date(year, month, last), text)
        day = date(year, month, int(m["d"]))
        if m["H"] is None:
            return FhirDate(day, day, text)
        tz = m["tz"]
        moment = datetime(year, month, day.day, int(m["H"]), int(m["M"]), int(m["S"] or 0))
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            moment -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        utc_day = moment.date()
        return FhirDate(utc_day, utc_day, text, moment)
    except (ValueError, OverflowError) as exc:  # month 13, February 30, a zone past year 1 or 9999
        raise DateProblem(f"impossible date: {text[:40]!r}") from exc


def optional_date(value: object) -> FhirDate | None:
    """The date, or None when there is none or it cannot be read (the caller records what it skipped)."""
    if value is None:
        return None
    try:
        return parse_fhir_date(value)
    except DateProblem:
        return None


def plus_years(born: date, years: float) -> date:
    """``born`` plus an age in years (Condition.onsetAge); DateProblem past the calendar's range."""
    if not -10_000 < years < 10_000:
        raise DateProblem(f"age {years:g} is out of range")
    whole = int(years)
    try:
        try:
            shifted = born.replace(year=born.year + whole)
        except ValueError:  # 29 February
            shifted = born.replace(year=born.year + whole, day=28)
        return shifted + timedelta(days=round((years - whole) * 365.25))
    except (ValueError, OverflowError) as exc:  # before year 1 or after 9999
        raise DateProblem(f"age {years:g} gives a date out of range") from exc


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive value is taken as UTC). ValueError, not OverflowError, when the shift
    leaves the calendar (``0001-01-01T00:00+01:00``), so callers answer 400 rather than 500."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{value.isoformat()} is outside the representable range in UTC") from exc


def utc_today(now: datetime) -> date:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).date()
