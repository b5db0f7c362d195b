"""Drift: PSI by hand, weekly score drift with alerts from real result rows, the shipped validation reference."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from quality.drift import DriftThresholds, header_drift, psi, score_drift, validation_score_distribution, week_start
from service.db import session_scope
from tests.quality.quality_rows import add_result, add_study, quality_db  # noqa: F401

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def test_psi_by_hand() -> None:
    expected = [50, 50]
    actual = [80, 20]
    by_hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert psi(expected, expected) == 0.0


def test_week_start_is_monday() -> None:
    assert week_start(MONDAY + timedelta(days=6, hours=14)) == "2026-03-02"
    assert week_start(MONDAY + timedelta(days=7)) == "2026-03-09"


def test_weekly_score_drift_alerts_on_the_shifted_week(quality_db) -> None:  # noqa: F811
    with session_scope(quality_db) as session:
        for week in range(4):
            for i in range(100):
                # Weeks 0-2: scores spread evenly; week 3: everything high (a new detector, say).
                score = (i + 0.5) / 100 if week < 3 else 0.8 + (i % 10) / 60
                at = MONDAY + timedelta(days=7 * week, minutes=i)
                study = add_study(session, arrived=at, manufacturer="ACME" if week < 3 else "NewVendor")
                add_result(session, study, score=score, at=at)
    with session_scope(quality_db) as session:
        report = score_drift(session, "chest-xray", "3", DriftThresholds())
        headers, header_alerts = header_drift(session, "chest-xray", DriftThresholds())
    assert [w.week for w in report.weeks] == ["2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23"]
    assert report.reference.startswith("first 2 weeks")
    assert report.reference_flag_rate == pytest.approx(0.5)
    assert report.weeks[0].psi == pytest.approx(0.0)
    assert report.weeks[3].psi > 1.0 and report.weeks[3].flag_rate == 1.0
    assert {(a.week, a.kind) for a in report.alerts} == {("2026-03-23", "score_psi"), ("2026-03-23", "flag_rate")}
    assert headers["manufacturer"][3]["summary"] == {"NewVendor": 100}
    assert [(a.week, a.kind) for a in header_alerts] == [("2026-03-23", "header_manufacturer")]


def test_validation_reference_from_the_shipped_bundle() -> None:
    counts = validation_score_distribution(REPO / "models", "chest-xray")
    assert counts is not None and len(counts) == 10 and sum(counts) > 100
    assert validation_score_distribution(REPO / "models", "no-such-task") is None


def test_a_week_too_small_to_judge_raises_no_alert(quality_db) -> None:  # noqa: F811
    # The first study of a new site's week: its PSI against the validation histogram is large by chance, and
    # a quality page that alerts on it teaches its readers to ignore alerts.
    with session_scope(quality_db) as session:
        for i in range(3):
            at = MONDAY + timedelta(minutes=i)
            add_result(session, add_study(session, arrived=at, manufacturer="NewVendor"), score=0.95, at=at)
    validation = validation_score_distribution(REPO / "models", "chest-xray")
    with session_scope(quality_db) as session:
        report = score_drift(session, "chest-xray", "3", DriftThresholds(), reference=validation)
        _, header_alerts = header_drift(session, "chest-xray", DriftThresholds())
        small = score_drift(session, "chest-xray", "3", DriftThresholds(min_week_n=3), reference=validation)
    assert report.weeks[0].n == 3 and report.weeks[0].psi is not None and report.weeks[0].psi > 0.2
    assert report.alerts == [] and header_alerts == [] and report.min_week_n == 100
    assert [a.kind for a in small.alerts] == ["score_psi"]  # the same week alerts once it is allowed to


def _weeks_of_studies(session, weeks: list[tuple[int, int, str]], *, first: int = 0) -> None:  # noqa: ANN001
    """Per week (studies, flagged, manufacturer), from week ``first`` after MONDAY; each study arrives and is
    scored at once."""
    for offset, (n, flagged, manufacturer) in enumerate(weeks, start=first):
        for i in range(n):
            at = MONDAY + timedelta(days=7 * offset, minutes=i)
            study = add_study(session, arrived=at, manufacturer=manufacturer)
            add_result(session, study, score=0.9 if i < flagged else 0.1, at=at)


def test_a_period_is_compared_with_the_versions_first_weeks_not_its_own(quality_db) -> None:  # noqa: F811
    # Four weeks at a 10% flag rate, then two at 40% from a new vendor: a report from the fifth week on had taken
    # its own first weeks (40%, NewVendor) as the baseline and raised neither alert.
    with session_scope(quality_db) as session:
        _weeks_of_studies(session, [(100, 10, "ACME")] * 4 + [(100, 40, "NewVendor")] * 2)
    since = MONDAY.replace(hour=0) + timedelta(weeks=4)
    with session_scope(quality_db) as session:
        report = score_drift(session, "chest-xray", "3", DriftThresholds(), since=since)
        _, header_alerts = header_drift(session, "chest-xray", DriftThresholds(), model_version="3", since=since)
    assert [w.week for w in report.weeks] == ["2026-03-30", "2026-04-06"]
    assert report.reference_flag_rate == pytest.approx(0.10) and report.baseline_n == 200
    assert report.baseline_note is None
    assert [(a.week, a.kind) for a in report.alerts if a.kind == "flag_rate"] == [
        ("2026-03-30", "flag_rate"), ("2026-04-06", "flag_rate")]
    assert "vs 10.0% in the first 2 weeks in service" in report.alerts[-1].detail
    assert [(a.week, a.kind) for a in header_alerts] == [
        ("2026-03-30", "header_manufacturer"), ("2026-04-06", "header_manufacturer")]


def test_a_baseline_too_small_raises_no_alert_and_says_so(quality_db) -> None:  # noqa: F811
    # A pilot of 4 studies a week, half flagged, then weeks of 100 at 10% from another vendor: an 8-study baseline
    # (Wilson 95% 0.22-0.78) had made every later full week alarm, on flag rate and manufacturer.
    with session_scope(quality_db) as session:
        _weeks_of_studies(session, [(4, 2, "ACME")] * 2 + [(100, 10, "NewVendor")] * 2)
    with session_scope(quality_db) as session:
        report = score_drift(session, "chest-xray", "3", DriftThresholds())
        headers, header_alerts = header_drift(session, "chest-xray", DriftThresholds(), model_version="3")
        lax = DriftThresholds(min_baseline_n=8)
        judged = score_drift(session, "chest-xray", "3", lax)
        _, judged_headers = header_drift(session, "chest-xray", lax, model_version="3")
    assert report.baseline_n == 8 and report.min_baseline_n == 100 and report.reference_flag_rate == pytest.approx(0.5)
    assert report.alerts == [] and header_alerts == []
    assert report.baseline_note is not None and report.baseline_note.startswith("baseline too small: no alert")
    assert "8 scored studies" in report.baseline_note and "fewer than 100" in report.baseline_note
    assert report.to_dict()["baseline_note"] == report.baseline_note
    assert headers["manufacturer"][0]["baseline_n"] == 8
    # The same weeks alert once so small a baseline is allowed: the minimum is what holds them back.
    assert {a.kind for a in judged.alerts} == {"flag_rate", "score_psi"} and len(judged_headers) == 2


def test_score_drift_takes_the_period_by_arrival_as_the_metrics_do(quality_db) -> None:  # noqa: F811
    # A backfill: 120 studies that arrived in February, scored on 10 March. Score drift had put them in March
    # (by scoring time) while the metrics and header drift of the same period put them in February.
    scored = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    with session_scope(quality_db) as session:
        for i in range(120):
            study = add_study(session, arrived=datetime(2026, 2, 2, 8, 0, tzinfo=UTC) + timedelta(hours=3 * i))
            add_result(session, study, score=0.1, at=scored)
    february = {"since": datetime(2026, 2, 1, tzinfo=UTC), "until": datetime(2026, 3, 1, tzinfo=UTC)}
    with session_scope(quality_db) as session:
        in_february = score_drift(session, "chest-xray", "3", DriftThresholds(), **february)
        in_march = score_drift(session, "chest-xray", "3", DriftThresholds(), since=datetime(2026, 3, 1, tzinfo=UTC))
        headers, _ = header_drift(session, "chest-xray", DriftThresholds(), model_version="3", **february)
    assert [(w.week, w.n) for w in in_february.weeks] == [(r["week"], r["n"]) for r in headers["manufacturer"]]
    assert sum(w.n for w in in_february.weeks) == 120 and in_february.weeks[0].week == "2026-02-02"
    assert in_march.weeks == []


def test_a_study_scored_again_counts_once_by_its_latest_revision(quality_db) -> None:  # noqa: F811
    """Ten flagged studies of 100 re-opened by a late image and scored again had made the week 110 scored studies with
    20 flagged (0.18 for 0.10), and the baseline too; one whose new revision could not be scored kept counting with
    its old score (review 7, quality figures 2)."""
    with session_scope(quality_db) as session:
        for i in range(100):
            study = add_study(session, arrived=MONDAY + timedelta(minutes=i))
            add_result(session, study, score=0.9 if i < 10 else 0.1, at=MONDAY + timedelta(minutes=i))
            if i < 10:  # revision 2, scored again by the same version, as the worker stores it
                study.revision = 2
                add_result(session, study, score=0.9, at=MONDAY + timedelta(minutes=i, hours=1))
        lost = add_study(session, arrived=MONDAY)
        add_result(session, lost, score=0.9, at=MONDAY)
        lost.revision = 2
        add_result(session, lost, score=None, outcome="could_not_score", at=MONDAY + timedelta(hours=1))
    with session_scope(quality_db) as session:
        report = score_drift(session, "chest-xray", "3", DriftThresholds())
    week = report.weeks[0]
    assert (week.n, week.flagged, week.flag_rate) == (100, 10, 0.1)
    assert report.baseline_n == 100 and report.reference_flag_rate == 0.1


def test_a_promoted_versions_header_baseline_is_its_own_first_weeks(quality_db) -> None:  # noqa: F811
    """v1 four weeks on ACME films, then v2 on NewVendor films from its first day: v2's header baseline had been every
    study up to the end of its first weeks (600, 400 of them ACME), so each of its weeks alerted (review 7, quality
    figures 3)."""
    with session_scope(quality_db) as session:
        for week in range(6):
            for i in range(100):
                at = MONDAY + timedelta(days=7 * week, minutes=i)
                study = add_study(session, arrived=at, manufacturer="ACME" if week < 4 else "NewVendor")
                add_result(session, study, score=0.1, at=at, model_version="1" if week < 4 else "2")
    with session_scope(quality_db) as session:
        headers, alerts = header_drift(session, "chest-xray", DriftThresholds(), model_version="2",
                                       since=MONDAY.replace(hour=0) + timedelta(weeks=4))
    assert [(r["week"], r["baseline_n"]) for r in headers["manufacturer"]] == [("2026-03-30", 200), ("2026-04-06", 200)]
    assert alerts == []
