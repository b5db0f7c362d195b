"""The screening date a record is read against is the site's calendar date, not UTC's: a record's dates are the
dates its writer wrote, so east of UTC a death or a birth dated this morning must not be taken for tomorrow's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

import screening.site_calendar as site_calendar
from screening.screener import Screener
from screening.site_calendar import site_today
from tests.screening.conftest import syndromic_child

# 09:00 on 3 December at a UTC+14 site (Kiribati); 20:00 on 2 December in New York is 01:00 on the 3rd in UTC.
MORNING_IN_KIRIBATI = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
EVENING_IN_NEW_YORK = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Sets the process's zone and stops the clock at an instant: ``clock(zone, instant)``."""

    def stop(zone: str, instant: datetime) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

        class Stopped(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
                return instant.astimezone(tz) if tz is not None else datetime.fromtimestamp(instant.timestamp())

        monkeypatch.setattr(site_calendar, "datetime", Stopped)

    yield stop
    monkeypatch.undo()
    time.tzset()


def test_site_today_is_the_date_of_the_process_zone(clock) -> None:  # type: ignore[no-untyped-def]
    clock("Pacific/Kiritimati", MORNING_IN_KIRIBATI)
    assert site_today() == date(2026, 12, 3)
    clock("America/New_York", EVENING_IN_NEW_YORK)
    assert site_today() == date(2026, 12, 2)
    clock("UTC", EVENING_IN_NEW_YORK)
    assert site_today() == date(2026, 12, 3)


def test_a_child_who_died_this_morning_east_of_utc_is_not_flagged(clock, screener: Screener) -> None:  # type: ignore[no-untyped-def]
    child = syndromic_child("kiri-1")
    assert screener.screen(child, date(2026, 12, 2)).flagged  # alive the day before: this child is flagged
    clock("Pacific/Kiritimati", MORNING_IN_KIRIBATI)
    died = replace(child, deceased=date(2026, 12, 3))
    result = screener.screen(died)  # no date given: the site's today
    assert result.status == "deceased" and not result.flagged


def test_a_child_turns_seven_on_the_sites_birthday_not_utcs(clock, screener: Screener) -> None:  # type: ignore[no-untyped-def]
    clock("America/New_York", EVENING_IN_NEW_YORK)  # the 2nd in New York, the 3rd in UTC
    child = replace(syndromic_child("ny-1"), birth_date=date(2019, 12, 3))
    assert screener.screen(child).status != "out_of_age"
    assert screener.screen(child, date(2026, 12, 3)).status == "out_of_age"
