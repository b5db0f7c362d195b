"""Quality metrics from real rows (studies, results, final reads) checked against a hand computation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from quality.metrics import age_band, compute_metrics, load_paired_cases, subgroup_metrics
from service.db import session_scope
from tests.quality.quality_rows import add_final_read, add_result, add_study, quality_db  # noqa: F401

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# Ten confirmed studies, threshold 0.5: TP 3 (0.9, 0.8, 0.7), FN 1 (0.4), FP 2 (0.6, 0.55), TN 4.
TRUTH = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.4, 0.7, 0.6, 0.3, 0.2, 0.1, 0.55, 0.05]


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def seed(factory) -> None:
    with session_scope(factory) as session:
        for i, (truth, score) in enumerate(zip(TRUTH, SCORES, strict=True)):
            study = add_study(
                session,
                arrived=T0 + timedelta(minutes=i),
                manufacturer="ACME" if i < 5 else "Other",
                sex="F" if i % 2 == 0 else "M",
                birth_date="19600101" if i < 3 else "20150101",
            )
            if i == 0:
                # A first revision's result, superseded by the rescore of revision 2 below.
                add_result(session, study, score=0.01)
                study.revision = 2
            add_result(session, study, score=score, at=T0 + timedelta(minutes=i, seconds=30))
            add_result(session, study, score=1 - score, role="challenger", model_version="4")
            add_final_read(session, study, bool(truth), read_at=T0 + timedelta(minutes=i, hours=i + 1))
        # Neither counts: a study nobody has read yet, and one the champion could not score.
        unread = add_study(session, arrived=T0)
        add_result(session, unread, score=0.99)
        bad = add_study(session, arrived=T0)
        add_result(session, bad, score=None, outcome="could_not_score", reason="no frontal view")
        add_final_read(session, bad, True, read_at=T0 + timedelta(hours=1))


def test_metrics_match_hand_computation(quality_db) -> None:  # noqa: F811
    seed(quality_db)
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
    assert len(cases) == 10
    m = compute_metrics(cases)
    assert (m.tp, m.fn, m.fp, m.tn) == (3, 1, 2, 4)
    assert m.sensitivity.value == pytest.approx(3 / 4)
    assert m.specificity.value == pytest.approx(4 / 6)
    assert m.ppv.value == pytest.approx(3 / 5)
    assert m.npv.value == pytest.approx(4 / 5)
    assert m.flag_rate.value == pytest.approx(5 / 10)
    assert (m.sensitivity.ci_low, m.sensitivity.ci_high) == pytest.approx(wilson(3, 4))
    assert (m.ppv.ci_low, m.ppv.ci_high) == pytest.approx(wilson(3, 5))
    # 22 of the 24 positive-negative pairs are ordered right (0.4 only beats four negatives).
    assert m.auroc == pytest.approx(22 / 24)
    assert m.auroc_ci_low <= m.auroc <= m.auroc_ci_high
    assert m.brier == pytest.approx(sum((s - t) ** 2 for s, t in zip(SCORES, TRUTH, strict=True)) / 10)
    assert m.brier == pytest.approx(0.1305)
    # Read i+1 hours after arrival: all ten -> median 5.5 h, the four positives (1..4 h) -> 2.5 h.
    assert m.median_hours_to_read_all == pytest.approx(5.5)
    assert m.median_hours_to_read_positive == pytest.approx(2.5)
    assert sum(row["count"] for row in m.reliability) == 10

    groups = subgroup_metrics(cases)
    acme = groups["manufacturer"]["ACME"]  # studies 0-4: TP 3, FN 1, FP 1
    assert (acme.tp, acme.fn, acme.fp, acme.tn) == (3, 1, 1, 0)
    assert groups["age_band"]["50-69"].n == 3 and groups["age_band"]["0-17"].n == 7
    assert groups["sex"]["F"].n == 5


def test_challenger_is_measured_separately(quality_db) -> None:  # noqa: F811
    seed(quality_db)
    with session_scope(quality_db) as session:
        challenger = compute_metrics(load_paired_cases(session, task="chest-xray", model_version="4"))
    # The challenger scored 1 - score: every pair is inverted.
    assert challenger.auroc == pytest.approx(2 / 24)
    assert challenger.n == 10


def test_age_band() -> None:
    assert age_band("19600615", "20260614") == "50-69"
    assert age_band("19600615", "20260615") == "50-69"
    assert age_band("20100101", "20260101") == "0-17"
    assert age_band("", "20260101") == "unknown"
    # the ACR-NEMA form PS3.5 6.2 asks readers to accept (it had been "unknown": review7 time_locale)
    assert age_band("1960.06.15", "2026.06.15") == "50-69"
    assert age_band("20100101", "2026.01.01") == "0-17"


def test_screening_flags_measured_by_paediatricians_outcomes(quality_db) -> None:  # noqa: F811
    from quality.metrics import screening_flag_outcomes
    from screening.tables import ScreeningOutcome, ScreeningRun

    with session_scope(quality_db) as session:
        # Version 1: six children, four flagged; three flags decided (two referred, one not relevant).
        for i, (flagged, outcome) in enumerate(
            [(True, "referred"), (True, "referred"), (True, "not_relevant"), (True, None), (False, None), (False, None)]
        ):
            run = ScreeningRun(
                patient_id=f"child-{i}", patient_digest="d", screened_at=T0, age_days=900, status="screened",
                model_version="1", risk=0.9 if flagged else 0.1, threshold=0.5, flagged=flagged, explanation={},
                risk_assessment={}, submitted_by="paul",
            )
            session.add(run)
            session.flush()
            if outcome:
                session.add(ScreeningOutcome(result_id=run.id, outcome=outcome, decided_by="paul", decided_at=T0))
            if i == 2:
                # A changed decision is a new row; only the latest counts (this flag was once "referred").
                session.add(ScreeningOutcome(result_id=run.id, outcome="referred", decided_by="paul", decided_at=T0))
                session.flush()
                session.add(ScreeningOutcome(result_id=run.id, outcome="not_relevant", decided_by="paul", decided_at=T0))
    with session_scope(quality_db) as session:
        (row,) = screening_flag_outcomes(session)
    assert (row["screened"], row["flagged"], row["decided"], row["referred"]) == (6, 4, 3, 2)
    assert row["ppv"]["value"] == pytest.approx(2 / 3)
    assert (row["ppv"]["ci_low"], row["ppv"]["ci_high"]) == pytest.approx(wilson(2, 3))


def test_time_to_read_before_and_after_the_policy(quality_db) -> None:  # noqa: F811
    from quality.metrics import time_to_read_around

    seed(quality_db)
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
    # Studies 0-4 arrived before minute 5 (read 1-5 h later; positives 0-3: 1-4 h), 5-9 after (6-10 h, none positive).
    split = time_to_read_around(cases, T0 + timedelta(minutes=5))
    assert split["before"] == {"n": 5, "n_positive": 4, "median_hours_all": 3.0, "median_hours_positive": 2.5}
    assert split["after"] == {"n": 5, "n_positive": 0, "median_hours_all": 8.0, "median_hours_positive": None}


def test_the_report_shows_every_rate_and_the_brier_score_with_its_interval(quality_db, tmp_path) -> None:  # noqa: F811
    """A bare 0.500 on a subgroup of a few studies reads as exact: the flag rate (overall, each subgroup, the weekly
    drift) is shown with its Wilson interval, the Brier score with a bootstrap one, as the JSON carries them."""
    import numpy as np

    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.report import ReportQuery, build_report, render_report
    from quality.statistics import bootstrap_brier

    seed(quality_db)
    with session_scope(quality_db) as session:
        report = build_report(session, ReportQuery("chest-xray", "3"), thresholds=DriftThresholds(), rules=GateRules(),
                              models_dir=tmp_path, now=T0 + timedelta(days=1))
    page = render_report(report, document=False)
    low, high = wilson(5, 10)
    assert f"<td>0.500 ({low:.3f}-{high:.3f})</td></tr>" in page  # the overall flag rate, last cell of its row
    acme_low, acme_high = wilson(4, 5)  # subgroup ACME: 4 of 5 flagged
    assert "<th>ACME</th>" in page and f"<td>0.800 ({acme_low:.3f}-{acme_high:.3f})</td></tr>" in page
    m = report.metrics
    assert (m.brier_ci_low, m.brier_ci_high) == pytest.approx(
        bootstrap_brier(np.array(TRUTH), np.array(SCORES), n_boot=1000, seed=0))
    assert m.brier_ci_low < m.brier < m.brier_ci_high
    assert f"<td>{m.brier:.3f} ({m.brier_ci_low:.3f}-{m.brier_ci_high:.3f})</td>" in page
    assert "flag rate (95% CI)" in page and "Brier (bootstrap 95% CI)" in page
    assert report.drift.weeks
    for week in report.drift.weeks:
        week_low, week_high = wilson(week.flagged, week.n)
        assert week.flag_rate == pytest.approx(week.flagged / week.n)
        assert f"<th>{week.week}</th><td>{week.n}</td><td>{week.flag_rate:.3f} ({week_low:.3f}-{week_high:.3f})</td>" in page
    assert report.metrics.to_dict()["brier_ci_low"] == pytest.approx(m.brier_ci_low)


def test_a_period_report_labels_the_comparison_as_all_confirmed_studies(quality_db, tmp_path) -> None:  # noqa: F811
    """The gate judges every confirmed study both versions scored; a report for a period had shown that table
    under the period's heading, with figures that disagreed with the version's own row, and said nothing."""
    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.report import ReportQuery, build_report, render_report

    seed(quality_db)
    since = T0 + timedelta(minutes=5)
    with session_scope(quality_db) as session:
        report = build_report(session, ReportQuery("chest-xray", "4", since=since), thresholds=DriftThresholds(),
                              rules=GateRules(), models_dir=tmp_path, now=T0 + timedelta(days=1))
    page = render_report(report, document=False)
    assert report.metrics.n == 5 and report.gate is not None and report.gate.comparison is not None
    assert report.gate.comparison.n_paired == 10
    assert "vs champion v3: all confirmed studies, whatever the period</h3>" in page
    assert 'id="comparison-period">Every study both versions scored and a radiologist read, not only the period ' \
           "2026-03-02 08:05 UTC to now" in page


@pytest.mark.parametrize("total", [1, 2, 3, 5, 7, 10, 30, 1000])
def test_wilson_bounds_stay_within_zero_and_one(total: int) -> None:
    """0 of 7 specificity had a lower bound of -2.8e-17, printed "-0.000" in the report."""
    from quality.statistics import wilson_interval

    for successes in range(total + 1):
        low, high = wilson_interval(successes, total)
        assert 0.0 <= low <= successes / total <= high <= 1.0
    assert wilson_interval(0, total)[0] == 0.0 and wilson_interval(total, total)[1] == 1.0
    assert "-" not in f"{wilson_interval(0, total)[0]:.3f}"


def test_a_latest_revision_that_could_not_be_scored_leaves_the_study_out(quality_db) -> None:  # noqa: F811
    """Only the latest revision counts: revision 1 scored 0.9, revision 2 could not be scored. The revision-1 score
    had been counted (a false positive) against a read of revision 2's images."""
    with session_scope(quality_db) as session:
        study = add_study(session, arrived=T0)
        add_result(session, study, score=0.9, at=T0)
        study.revision = 2
        add_result(session, study, score=None, outcome="could_not_score", reason="no frontal view", at=T0 + timedelta(hours=1))
        add_final_read(session, study, False, read_at=T0 + timedelta(hours=2))
        # The other way round, revision 2 scored after revision 1 failed: it counts.
        rescored = add_study(session, arrived=T0)
        add_result(session, rescored, score=None, outcome="could_not_score", reason="no frontal view", at=T0)
        rescored.revision = 2
        add_result(session, rescored, score=0.8, at=T0 + timedelta(hours=1))
        add_final_read(session, rescored, True, read_at=T0 + timedelta(hours=2))
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
    assert [(c.study_id, c.score, c.truth) for c in cases] == [(rescored.id, 0.8, True)]
    # Left out, not forgotten: the report and the API count it (could not score, read negative).
    left_out = cases.unscored_of("chest-xray", "3")
    assert (left_out.could_not_score, left_out.could_not_score_positive, left_out.out_of_scope) == (1, 0, 0)


def seed_unscored(factory, *, version: str = "3", role: str = "champion") -> None:
    """Repro 8: ten scored studies (five read positive, all found) and seven read studies the version left unscored:
    five it could not score, all read positive, and two outside its intended use (one read positive)."""
    with session_scope(factory) as session:
        for i in range(10):
            study = add_study(session, arrived=T0 + timedelta(hours=i))
            add_result(session, study, score=0.9 if i < 5 else 0.1, model_version=version, role=role)
            add_final_read(session, study, i < 5, read_at=T0 + timedelta(hours=i, minutes=30))
        for i, (outcome, positive) in enumerate([("could_not_score", True)] * 5 + [("out_of_scope", True), ("out_of_scope", False)]):
            study = add_study(session, arrived=T0 + timedelta(hours=20 + i))
            study.status = outcome
            add_result(session, study, score=None, outcome=outcome, reason="pixel data unreadable", model_version=version, role=role)
            add_final_read(session, study, positive, read_at=T0 + timedelta(hours=20 + i, minutes=30))


def test_read_studies_the_version_did_not_score_are_counted_and_stated(quality_db, tmp_path) -> None:  # noqa: F811
    """The report had shown sensitivity 1.000 on '10 studies confirmed by a final read' and never mentioned the five
    positive studies the version could not score: they are counted by outcome and read, stated beside the figures,
    and a second sensitivity counts the could-not-score positives as missed (out-of-scope ones stay out of it)."""
    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.metrics import UnscoredReads, sensitivity_over_read
    from quality.report import ReportQuery, build_report, render_report

    seed_unscored(quality_db)
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
        report = build_report(session, ReportQuery("chest-xray", "3"), thresholds=DriftThresholds(), rules=GateRules(),
                              models_dir=tmp_path, now=T0 + timedelta(days=2))
    assert len(cases) == 10
    unscored = cases.unscored_of("chest-xray", "3")
    assert unscored == UnscoredReads(could_not_score=5, could_not_score_positive=5, out_of_scope=2, out_of_scope_positive=1)
    assert unscored.to_dict() | {"note": ""} == {
        "n": 7, "read_positive": 6, "read_negative": 1, "note": "",
        "could_not_score": {"n": 5, "read_positive": 5, "read_negative": 0},
        "out_of_scope": {"n": 2, "read_positive": 1, "read_negative": 1},
        "trained_on": {"n": 0, "read_positive": 0, "read_negative": 0},
    }
    # The figures over scored studies are as they were.
    m = compute_metrics(cases)
    assert (m.n, m.tp, m.fn, m.sensitivity.value) == (10, 5, 0, 1.0)
    over_read = sensitivity_over_read(m, unscored)
    assert (over_read.successes, over_read.total, over_read.value) == (5, 10, 0.5)
    assert unscored.share_could_not_score(m.n) == pytest.approx(5 / 15)

    assert report.metrics.sensitivity.value == 1.0 and report.unscored == unscored
    page = render_report(report, document=False)
    low, high = wilson(5, 10)
    assert (
        "7 studies read by a radiologist were not scored by this version (could not score: 5, of them read positive: 5; "
        "outside intended use: 2, of them read positive: 1); the figures above are over scored studies only."
    ) in page
    assert (
        "Sensitivity over every read study in intended use, where the 5 could-not-score positives count as missed: "
        f"0.500 ({low:.3f}-{high:.3f}), 5 of 10; 5 of 15 read studies in intended use could not be scored (33.3%)."
    ) in page
    assert "10 scored studies confirmed by a final read (5 with the finding)" in page
    # The download (and the MLflow copy, the same document) says it too.
    assert "could not score: 5, of them read positive: 5" in render_report(report)


def test_a_report_with_every_read_study_scored_says_so(quality_db, tmp_path) -> None:  # noqa: F811
    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.report import ReportQuery, build_report, render_report

    seed(quality_db)
    with session_scope(quality_db) as session:
        report = build_report(session, ReportQuery("chest-xray", "4"), thresholds=DriftThresholds(), rules=GateRules(),
                              models_dir=tmp_path, now=T0 + timedelta(days=1))
    assert report.unscored.n == 0 and report.metrics.n == 10
    page = render_report(report, document=False)
    assert '<p id="unscored">No study read by a radiologist was left unscored by this version.</p>' in page
    assert "Sensitivity over every read study" not in page


def seed_inpatients(factory, patients: int = 20, films: int = 6) -> None:
    """Inpatients with daily films: the finding and the patient's own score level persist across a patient's films."""
    import numpy as np

    rng = np.random.default_rng(0)
    with session_scope(factory) as session:
        for p in range(patients):
            truth = p % 2 == 0
            level = rng.normal(0.6 if truth else 0.4, 0.15)
            for k in range(films):
                arrived = T0 + timedelta(hours=p * films + k)
                study = add_study(session, arrived=arrived, patient_id=f"PAT-{p:02d}")
                add_result(session, study, score=float(np.clip(level + rng.normal(0, 0.03), 0, 1)), at=arrived)
                add_final_read(session, study, truth, read_at=arrived + timedelta(minutes=30))


def test_a_patients_repeated_studies_are_one_patient_in_the_intervals(quality_db, tmp_path) -> None:  # noqa: F811
    """An inpatient's twelve films had counted as twelve independent observations: PairedCase carried no patient,
    the AUROC's bootstrap resampled studies (95% CI 0.635-0.728 where patients give 0.499-0.838) and the Wilson
    intervals counted studies (review 4, defect 6). The figures now name the patients and resample them."""
    import numpy as np

    from quality.statistics import bootstrap_auroc, wilson_interval

    seed_inpatients(quality_db)
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
    assert {c.patient_id for c in cases} == {f"PAT-{p:02d}" for p in range(20)}
    m = compute_metrics(cases)
    assert (m.n, m.n_positive, m.n_patients, m.n_patients_positive) == (120, 60, 20, 10)
    truth = np.array([c.truth for c in cases], dtype=int)
    scores = np.array([c.score for c in cases])
    patients = np.array([c.patient_id for c in cases])
    assert (m.auroc_ci_low, m.auroc_ci_high) == bootstrap_auroc(truth, scores, n_boot=1000, seed=0, groups=patients)
    by_study = bootstrap_auroc(truth, scores, n_boot=1000, seed=0)
    assert m.auroc_ci_high - m.auroc_ci_low > 1.5 * (by_study[1] - by_study[0])
    # A patient's films agree on the call here, so each patient counts once: the Wilson interval over 10 patients.
    sensitivity = m.sensitivity
    found = len({c.patient_id for c in cases if c.truth and c.flagged})
    assert {c.patient_id for c in cases if c.truth and c.flagged}.isdisjoint({c.patient_id for c in cases if c.truth and not c.flagged})
    assert (sensitivity.successes, sensitivity.total, sensitivity.patients) == (found * 6, 60, 10)
    assert (sensitivity.ci_low, sensitivity.ci_high) == pytest.approx(wilson_interval(found, 10))
    assert "They are of 20 patients (10 with the finding); a patient's studies are not independent" in _page(quality_db, tmp_path)


def _page(factory, models_dir) -> str:
    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.report import ReportQuery, build_report, render_report

    with session_scope(factory) as session:
        report = build_report(session, ReportQuery("chest-xray", "3"), thresholds=DriftThresholds(), rules=GateRules(),
                              models_dir=models_dir, now=T0 + timedelta(days=2))
    return render_report(report, document=False)


def test_one_study_per_patient_keeps_the_plain_intervals() -> None:
    """The design effect is 1 when no patient has two studies (the plain Wilson interval, the studies' bootstrap), and
    the patients' count when a patient's studies all agree."""
    import numpy as np

    from quality.statistics import clustered_wilson_interval, design_effect, wilson_interval

    hits = np.array([True] * 30 + [False] * 20)
    assert clustered_wilson_interval(hits, np.arange(50)) == wilson_interval(30, 50)
    assert clustered_wilson_interval(hits, None) == wilson_interval(30, 50)
    twice = np.repeat(hits, 2)
    assert design_effect(twice, np.repeat(np.arange(50), 2)) == 2.0
    assert clustered_wilson_interval(twice, np.repeat(np.arange(50), 2)) == pytest.approx(wilson_interval(30, 50))
    # No spread to estimate the correlation from (all found): as if each patient's studies agree.
    assert design_effect(np.ones(12, dtype=bool), np.repeat(np.arange(4), 3)) == 3.0


def test_the_paired_difference_interval_is_tangos() -> None:
    """Tango's score interval against the published example (Fagerland, Lydersen and Laake 2013: Cavo et al. 2012,
    59/6/16/80: -0.0621, 95% CI -0.1240 to -0.0054), and with no discordant pair at all (z^2 / (n + z^2))."""
    from quality.statistics import paired_difference_interval

    estimate, low, high = paired_difference_interval(6, 16, 161)
    assert (round(estimate, 4), round(low, 4), round(high, 4)) == (-0.0621, -0.1240, -0.0054)
    z2 = 1.959964**2
    assert paired_difference_interval(0, 0, 40) == pytest.approx((0.0, -z2 / (40 + z2), z2 / (40 + z2)))
    assert paired_difference_interval(5, 0, 5)[1:] == pytest.approx((0.131, 1.0), abs=1e-3)


def test_the_brier_bootstrap_holds_a_few_rounds_at_a_time() -> None:
    """All 1000 rounds had been drawn at once: 50,000 studies took 763 MiB (1.6 GB at 100,000, a year of a large
    site's chest films) in the serving process for one report (review 7, quality figures 5). Drawn in chunks from the
    same stream, the interval is the same."""
    import tracemalloc

    import numpy as np

    from quality.statistics import bootstrap_brier

    rng = np.random.default_rng(1)
    labels, scores = (rng.random(20_000) < 0.2).astype(int), rng.random(20_000)
    tracemalloc.start()
    try:
        interval = bootstrap_brier(labels, scores, n_boot=500, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    errors = (scores - labels) ** 2
    whole = errors[np.random.default_rng(3).integers(0, 20_000, (500, 20_000))].mean(axis=1)
    assert interval == tuple(np.percentile(whole, [2.5, 97.5]))
    assert peak < 40 * 2**20, peak  # all at once: 160 MiB


def test_the_sensitivity_over_read_studies_has_its_interval_over_patients(quality_db, tmp_path) -> None:  # noqa: F811
    """Three inpatients read positive, six daily films each: A's and B's scored and flagged, C's could not be scored.
    The sensitivity over read studies (C's films as missed) had the plain Wilson interval, 0.437-0.837, beside figures
    whose intervals are over patients (review 7, quality figures 6): with the design effect (6, the patients' films
    all agree) it is Wilson's on 3 effective studies."""
    from quality.drift import DriftThresholds
    from quality.gate import GateRules
    from quality.metrics import sensitivity_over_read
    from quality.report import ReportQuery, build_report, render_report
    from quality.statistics import wilson_interval

    with session_scope(quality_db) as session:
        for patient in "ABCD":
            for day in range(6):
                at = T0 + timedelta(days=day, minutes=ord(patient))
                study = add_study(session, arrived=at, patient_id=patient)
                if patient == "C":
                    add_result(session, study, score=None, outcome="could_not_score", reason="no frontal view", at=at)
                else:
                    add_result(session, study, score=0.9 if patient in "AB" else 0.1, at=at)
                add_final_read(session, study, patient != "D", read_at=at + timedelta(hours=2))
    with session_scope(quality_db) as session:
        cases = load_paired_cases(session, task="chest-xray", model_version="3")
        report = build_report(session, ReportQuery("chest-xray", "3"), thresholds=DriftThresholds(), rules=GateRules(),
                              models_dir=tmp_path, now=T0 + timedelta(days=7))
    m = compute_metrics(cases)
    over_read = sensitivity_over_read(m, cases.unscored_of("chest-xray", "3"), cases)
    low, high = wilson_interval(12, 18, z=1.959964 * math.sqrt(6))
    assert (over_read.successes, over_read.total, over_read.patients) == (12, 18, 3)
    assert (over_read.ci_low, over_read.ci_high) == pytest.approx((low, high)) and round(low, 3) == 0.208
    assert report.over_read == over_read
    assert f"0.667 ({low:.3f}-{high:.3f}), 12 of 18" in render_report(report, document=False)
