"""The site's calendar: the date a screening is as of when none is given."""

from __future__ import annotations

from datetime import date, datetime

__all__ = ["site_today"]


def site_today() -> date:
    """The site's calendar date (the process's time zone, ``TZ``): the date a screening is as of when none is given.
    A record's dates are the dates its writer wrote (a FHIR dateTime's own local date, a CSV date), so the screening
    date must be on the same calendar: the UTC date would, east of UTC, take a death or a birth dated this morning
    for tomorrow's (a child who died today screened and flagged) and, west of UTC in the evening, make a child seven
    the day before the birthday."""
    return datetime.now().astimezone().date()
