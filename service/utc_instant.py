"""A command-line date or time read as a UTC instant, one rule for every command that takes one."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

__all__ = ["utc_instant_arg", "UTC_INSTANT_HELP"]

UTC_INSTANT_HELP = "ISO 8601 date or time; a date means its UTC midnight, a time without a zone is UTC, an offset is converted"


def utc_instant_arg(value: str) -> datetime:
    """An ISO 8601 date or time as a UTC instant, as the API reads it: a date is its UTC midnight, a time without
    a zone is UTC, an offset is converted (kept, the quality report's Period line had printed 01:00+01:00 as 01:00
    UTC; a time without a zone had reached a UTC column naive and ended in a traceback, in `quality report` and in
    `export-training --since`)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        # argparse turns this into its one-line usage error, exit code 2.
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 date or time (2026-03-01, 2026-03-01T08:00, 2026-03-01T08:00+01:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
