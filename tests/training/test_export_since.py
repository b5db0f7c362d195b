"""``medscreen export-training --since`` is a UTC instant, as ``quality report``'s bounds are: a time without a zone
had stayed naive and ended in a traceback at the database."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from training.retrain_cli import add_commands


def _since(value: str) -> datetime:
    parser = argparse.ArgumentParser(prog="medscreen")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export-training", "--task", "chest-xray", "--since", value, "out"]).since


def test_since_is_a_utc_instant_whatever_its_writing() -> None:
    assert _since("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    naive = _since("2026-03-01T10:00")
    assert naive == datetime(2026, 3, 1, 10, tzinfo=UTC) and naive.utcoffset() is not None
    offset = _since("2026-03-01T10:00+02:00")
    assert offset == datetime(2026, 3, 1, 8, tzinfo=UTC) and offset.tzinfo is UTC


def test_a_since_that_is_no_date_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _since("yesterday")
    assert exit_.value.code == 2
    assert "'yesterday' is not an ISO 8601 date or time" in capsys.readouterr().err
