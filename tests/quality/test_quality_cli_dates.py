"""``medscreen quality report --since/--until``: bounds are UTC instants, as the API reads them, and the Period line
states them in UTC."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from quality.cli import add_commands
from quality.report import _period

PLUS_ONE = timezone(timedelta(hours=1))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medscreen")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["quality", "report", "--task", "chest-xray", "--version", "10", *argv, "out.html"])


def test_an_offset_is_converted_and_a_time_without_a_zone_is_utc() -> None:
    args = _parse("--since", "2026-03-03T01:00+01:00", "--until", "2026-03-04")
    assert args.since == datetime(2026, 3, 3, tzinfo=UTC) and args.since.utcoffset() == timedelta(0)
    assert args.until == datetime(2026, 3, 4, tzinfo=UTC)
    naive = _parse("--since", "2026-03-03T00:00").since
    assert naive == datetime(2026, 3, 3, tzinfo=UTC) and naive.tzinfo is not None


def test_a_value_that_is_no_date_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse("--since", "last tuesday")
    assert exit_.value.code == 2  # not 1, the failed gate's
    err = capsys.readouterr().err
    assert "argument --since: 'last tuesday' is not an ISO 8601 date or time" in err and "Traceback" not in err


def test_the_period_line_states_offset_bounds_in_utc() -> None:
    since = datetime(2026, 3, 3, 1, 0, tzinfo=PLUS_ONE)
    assert _period(since, since + timedelta(days=1)) == "2026-03-03 to 2026-03-03 (UTC days, both included)"
    assert _period(datetime(2026, 3, 3, 9, 30, tzinfo=PLUS_ONE), datetime(2026, 3, 3, 15, 0, tzinfo=PLUS_ONE)) == (
        "2026-03-03 08:30 UTC to before 2026-03-03 14:00 UTC"
    )
