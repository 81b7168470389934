"""FHIR dates as day intervals: partial dates widen windows, never hide a red flag."""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.engine.dates import DateProblem, parse_fhir_date

TODAY = date(2026, 1, 15)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-01-10", date(2026, 1, 10), date(2026, 1, 10)),
        ("2026-01", date(2026, 1, 1), date(2026, 1, 31)),
        ("2025", date(2025, 1, 1), date(2025, 12, 31)),
        ("2026-01-10T23:30:00-05:00", date(2026, 1, 11), date(2026, 1, 11)),  # UTC day
        ("2026-01-10T01:00:00+03:00", date(2026, 1, 9), date(2026, 1, 9)),
        ("2026-01-10T10:00:00.123456Z", date(2026, 1, 10), date(2026, 1, 10)),
        ("2026-01-10T10:00", date(2026, 1, 10), date(2026, 1, 10)),
        ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
    ],
)
def test_parses_every_fhir_precision(text: str, start: date, end: date) -> None:
    parsed = parse_fhir_date(text)
    assert (parsed.start, parsed.end) == (start, end)


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-13-01",
        "2026-02-30",
        "10/01/2026",
        "",
        "2026-1-5",
        20260110,
        None,
        "2026-01-10T25:00",
    ],
)
def test_unreadable_dates_raise_instead_of_guessing(value: object) -> None:
    with pytest.raises(DateProblem):
        parse_fhir_date(value)


def test_recency_uses_the_latest_possible_day() -> None:
    assert parse_fhir_date("2026-01").days_before(TODAY) == -16  # could still be later this month
    assert parse_fhir_date("2026-01-01").days_before(TODAY) == 14


def test_a_partial_date_covering_today_ends_today_and_times_order_a_day() -> None:
    month = parse_fhir_date("2026-11").until(date(2026, 11, 21))
    assert (month.start, month.end) == (date(2026, 11, 1), date(2026, 11, 21))
    morning, evening = parse_fhir_date("2026-11-20T08:00:00Z"), parse_fhir_date("2026-11-20T22:00:00-02:00")
    assert morning.latest < evening.earliest  # 22:00 at -02:00 is 00:00 UTC the next day
    assert evening.start == date(2026, 11, 21)
    untimed = parse_fhir_date("2026-11-20")
    assert not untimed.latest < morning.earliest and not morning.latest < untimed.earliest
