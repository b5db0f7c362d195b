"""Drift of a model version in service: its weekly score distribution against the validation distribution
(population stability index), its weekly flag rate, and drift of the inputs' key headers (manufacturer, kVp,
pixel spacing). Needs no final reads, so it warns weeks before the confirmed metrics can.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.tables import Instance, ScoreResult, Series, Study
from service.lifecycle import StudyStatus

__all__ = [
    "DriftThresholds",
    "WeekDrift",
    "DriftAlert",
    "DriftReport",
    "psi",
    "week_start",
    "validation_score_distribution",
    "version_validation_distribution",
    "score_drift",
    "header_drift",
    "SCORE_BINS",
]

log = logging.getLogger(__name__)

# Ten equal-width bins: the same bins the shipped bundles' reliability tables use, so validation counts
# from models/<task>/metrics.json serve as the reference without the validation scores themselves.
SCORE_BINS = np.linspace(0.0, 1.0, 11)
# PSI of empty bins is infinite; a floor well below one study in a thousand keeps it finite and comparable.
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    psi_alert: float = 0.2
    flag_rate_alert: float = 0.10
    baseline_weeks: int = 2
    # A week with fewer studies is shown but raises no alert: with no drift at all, the PSI of n studies over
    # ten bins is about 9/n by chance (0.2 at 45 studies, the first study of a new site's week alone scored
    # 2.2), and one study's flag rate is 0 or 1. At 100 the chance PSI is about half the alert level.
    min_week_n: int = 100
    # The baseline (the version's first ``baseline_weeks`` weeks in service) must hold at least this many
    # studies, or nothing is compared with it ("baseline too small: no alert"). At 100 the Wilson 95% interval
    # of its flag rate is at most +-0.096 wide (at 50%), inside the 0.10 flag-rate alert; a pilot of 8 studies
    # (interval 0.22-0.78 at 50%) had made every later week alarm. Its first-weeks PSI reference obeys the same rule.
    min_baseline_n: int = 100


@dataclass(frozen=True)
class WeekDrift:
    week: str
    n: int
    flag_rate: float
    psi: float | None
    histogram: list[int]
    flagged: int = 0  # the week's flagged studies: the flag rate's interval is taken from the counts


@dataclass(frozen=True)
class DriftAlert:
    week: str
    kind: str  # "score_psi", "flag_rate", "header_<name>"
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class DriftReport:
    task: str
    model_version: str
    reference: str  # "validation" or "first N weeks"
    reference_flag_rate: float | None
    weeks: list[WeekDrift] = field(default_factory=list)
    headers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    alerts: list[DriftAlert] = field(default_factory=list)
    min_week_n: int = 1  # weeks with fewer scored studies raise no alert
    baseline_n: int = 0  # scored studies in the version's first weeks in service, whatever the period
    min_baseline_n: int = 0  # a smaller baseline raises no flag-rate alert (nor a PSI one when it is the reference)
    baseline_note: str | None = None  # "baseline too small: no alert (...)" when it is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (counts or shares).

    Rule of thumb: below 0.1 stable, 0.1-0.2 moderate shift, above 0.2 a shift worth a look.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() == 0 or a.sum() == 0:
        return float("nan")
    e = np.maximum(e / e.sum(), _PSI_FLOOR)
    a = np.maximum(a / a.sum(), _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def week_start(at: datetime) -> str:
    """The ISO week an instant falls in, named by its Monday (UTC)."""
    day = at.date() - timedelta(days=at.weekday())
    return day.isoformat()


def histogram(scores: Sequence[float]) -> list[int]:
    counts, _ = np.histogram(np.clip(np.asarray(scores, dtype=float), 0.0, 1.0), bins=SCORE_BINS)
    return [int(c) for c in counts]


def validation_score_distribution(models_dir: Path, task: str) -> list[int] | None:
    """Validation score counts per tenth from the bundle's reliability table, when the bundle has one.

    The out-of-fold (``cross_validated``) table is preferred: it is what the model gives patients it was not
    trained on, as a new site's are; bundles from before cross-validation have a ``validation`` table."""
    return _reliability_counts(models_dir / task / "metrics.json")


def version_validation_distribution(tracking_uri: str, models_dir: Path, task: str, model_version: str) -> list[int] | None:
    """The validation score counts of the version's own bundle: the ``bundle/metrics.json`` its run logged when it was
    registered (``log_onnx_bundle``, shipped or trained); None when the version is registered without one (the
    version's first weeks in service are the reference then). A version the registry does not hold, or a registry
    that cannot be read, gets the shipped bundle's (:func:`validation_score_distribution`), as before.

    The shipped bundle's counts had been every version's reference: a retrained version (another network, another
    calibration), or the champion kept when ``register-shipped --update`` brought a new bundle, was measured against
    another model's validation scores, "vs validation", and a retrained version scoring exactly as on its own
    validation set alerted every week (PSI 1.1)."""
    import tempfile

    from service.model_registry import registry_client, version_of

    try:
        registered = version_of(tracking_uri, task, model_version)
    except Exception as exc:  # noqa: BLE001 - an unreadable registry leaves the shipped reference, as before
        log.warning("%s v%s: the model registry cannot be read (%s: %s); score drift against the shipped bundle",
                    task, model_version, type(exc).__name__, exc)
        registered = None
    if registered is None:
        return validation_score_distribution(models_dir, task)
    if not registered.run_id:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = registry_client(tracking_uri).download_artifacts(registered.run_id, "bundle/metrics.json", tmp)
            return _reliability_counts(Path(local))
    except Exception as exc:  # noqa: BLE001 - no bundle logged with the run: the first weeks are the reference
        log.info("%s v%s: no bundle/metrics.json with its run (%s); score drift against its first weeks",
                 task, model_version, exc)
        return None


def _reliability_counts(path: Path) -> list[int] | None:
    if not path.is_file():
        return None
    try:
        evaluations = json.loads(path.read_text())["evaluations"]
        table = next(evaluations[name]["reliability"] for name in ("cross_validated", "validation") if name in evaluations)
    except (KeyError, ValueError, TypeError, StopIteration):
        return None
    counts = [0] * (len(SCORE_BINS) - 1)
    for row in table:
        index = int(round(float(row["bin_low"]) * 10))
        if 0 <= index < len(counts):
            counts[index] += int(row["count"])
    return counts if sum(counts) else None


def _week_monday(at: datetime) -> datetime:
    return datetime.combine(at.date() - timedelta(days=at.weekday()), time(0), tzinfo=UTC)


def _service_start(session: Session, task: str, model_version: str | None) -> datetime | None:
    """Arrival of the first study the version scored (of the task, when no version is named): where its
    first weeks in service begin, whatever period a report asks for."""
    query = select(Study.first_received_at).where(Study.task == task)
    if model_version is not None:
        query = query.join(ScoreResult, ScoreResult.study_id == Study.id).where(
            ScoreResult.task == task,
            ScoreResult.model_version == model_version,
            ScoreResult.outcome == StudyStatus.scored,
            ScoreResult.score.is_not(None),
        )
    return session.execute(query.order_by(Study.first_received_at).limit(1)).scalar()


def _baseline_until(start: datetime, thresholds: DriftThresholds) -> datetime:
    """The end (exclusive) of the first ``baseline_weeks`` calendar weeks from the week of ``start``."""
    return _week_monday(start) + timedelta(weeks=thresholds.baseline_weeks)


def _scored_by_arrival(
    session: Session, task: str, model_version: str, since: datetime | None, until: datetime | None
) -> list[tuple[datetime, float, bool]]:
    """(arrival, score, flagged) of each study the version scored that arrived in [since, until): one per study,
    its latest revision's result (as the metrics take it), left out when that result has no score.

    Every result had counted: a study re-opened by a late image (or re-sent) and scored again was two "scored
    studies" of its week and its flag counted twice, so ten re-scored positives of 100 studies read as a flag rate of
    0.18 where it was 0.10, in the weeks and in the baseline every week is judged against."""
    query = (
        select(ScoreResult.study_id, ScoreResult.revision, ScoreResult.id, ScoreResult.outcome, Study.first_received_at,
               ScoreResult.score, ScoreResult.call)
        .join(Study, Study.id == ScoreResult.study_id)
        .where(ScoreResult.task == task, ScoreResult.model_version == model_version)
    )
    if since:
        query = query.where(Study.first_received_at >= since)
    if until:
        query = query.where(Study.first_received_at < until)
    latest: dict[int, tuple[int, int, str, datetime, float | None, str | None]] = {}
    for study_id, revision, result_id, outcome, at, score, call in session.execute(query):
        kept = latest.get(study_id)
        if kept is None or (revision, result_id) > kept[:2]:
            latest[study_id] = (revision, result_id, outcome, at, score, call)
    return [
        (at, float(score), call == "positive")
        for _, _, outcome, at, score, call in latest.values()
        if outcome == StudyStatus.scored and score is not None
    ]


def score_drift(
    session: Session,
    task: str,
    model_version: str,
    thresholds: DriftThresholds,
    *,
    reference: list[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> DriftReport:
    """Weekly PSI and flag rate of one version's scores; alerts where either crosses its threshold.

    Weeks and the period are by the studies' arrival, as for the metrics and header drift (scoring time had
    put a backfill's studies in the week they were scored). The reference distribution is the validation one
    when given, else the version's first weeks in service; the reference flag rate is always the first weeks'
    (validation sets are enriched with positives, so their flag rate says nothing about a hospital's case mix).
    The first weeks are the version's own, whatever ``since``/``until`` ask for, and a baseline of fewer than
    ``thresholds.min_baseline_n`` (100) studies is "baseline too small: no alert": nothing is compared with it.
    """
    by_week: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for at, score, is_flagged in _scored_by_arrival(session, task, model_version, since, until):
        by_week[week_start(at)].append((score, is_flagged))
    weeks = sorted(by_week)
    start = _service_start(session, task, model_version)
    baseline = (
        [(score, is_flagged) for _, score, is_flagged in _scored_by_arrival(
            session, task, model_version, None, _baseline_until(start, thresholds))]
        if start is not None
        else []
    )
    first_weeks = f"first {thresholds.baseline_weeks} weeks in service"
    baseline_note = None
    if len(baseline) < thresholds.min_baseline_n and (baseline or weeks):
        baseline_note = (
            f"baseline too small: no alert ({len(baseline)} scored studies in the version's {first_weeks}, "
            f"fewer than {thresholds.min_baseline_n})"
        )
    reference_name = "validation"
    if reference is None:
        reference = histogram([s for s, _ in baseline]) if baseline else None
        reference_name = first_weeks
    psi_judged = reference_name == "validation" or baseline_note is None
    reference_flag_rate = sum(f for _, f in baseline) / len(baseline) if baseline else None
    report = DriftReport(
        task,
        model_version,
        reference_name,
        reference_flag_rate,
        min_week_n=thresholds.min_week_n,
        baseline_n=len(baseline),
        min_baseline_n=thresholds.min_baseline_n,
        baseline_note=baseline_note,
    )
    for week in weeks:
        items = by_week[week]
        counts = histogram([s for s, _ in items])
        value = psi(reference, counts) if reference else None
        flagged = sum(f for _, f in items)
        flag_rate = flagged / len(items)
        report.weeks.append(WeekDrift(week, len(items), flag_rate, value, counts, flagged))
        if len(items) < thresholds.min_week_n:
            continue
        if psi_judged and value is not None and value > thresholds.psi_alert:
            report.alerts.append(
                DriftAlert(week, "score_psi", value, thresholds.psi_alert, f"score PSI {value:.3f} vs {reference_name}")
            )
        if (
            baseline_note is None
            and reference_flag_rate is not None
            and abs(flag_rate - reference_flag_rate) > thresholds.flag_rate_alert
        ):
            report.alerts.append(
                DriftAlert(
                    week,
                    "flag_rate",
                    flag_rate,
                    thresholds.flag_rate_alert,
                    f"flag rate {flag_rate:.1%} vs {reference_flag_rate:.1%} in the {first_weeks}",
                )
            )
    for alert in report.alerts:
        log.warning("drift alert task=%s version=%s week=%s %s", task, model_version, alert.week, alert.detail)
    return report


def _instance_numbers(path: str) -> tuple[float | None, float | None]:
    """kVp and the row pixel spacing of one stored instance (header only; pixel data is never read)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["KVP", "PixelSpacing", "ImagerPixelSpacing"])
    except (OSError, InvalidDicomError):
        return None, None
    kvp = ds.get("KVP")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        kvp_value = float(kvp) if kvp not in (None, "") else None
    except (TypeError, ValueError):
        kvp_value = None
    try:
        spacing_value = float(spacing[0]) if spacing else None
    except (TypeError, ValueError, IndexError):
        spacing_value = None
    return kvp_value, spacing_value


def header_drift(
    session: Session,
    task: str,
    thresholds: DriftThresholds,
    *,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[DriftAlert]]:
    """Per week of arrival: manufacturer mix, median kVp and pixel spacing, each with a PSI against the first weeks.

    The first weeks are the version's first ``baseline_weeks`` weeks in service (of the task's studies when no
    version is named), whatever ``since``/``until`` ask for: the task's studies that arrived in them, from the
    arrival of the version's first scored study. Each row
    carries ``baseline_n``; a header whose baseline holds fewer than ``thresholds.min_baseline_n`` (100) values
    raises no alert ("baseline too small"). kVp and spacing come from the first stored instance of each study
    (one header read per study).
    """
    studies = _arrivals(session, task, since, until)
    if not studies:
        return {}, []
    start = _service_start(session, task, model_version)
    # From the version's first study on, as its score baseline: from the start of time, a version promoted after
    # months of another's service was judged against those months (a vendor change before its first day alerted
    # every week, "baseline 600 studies" for its 200).
    base_studies = _arrivals(session, task, start, _baseline_until(start, thresholds)) if start is not None else {}
    values = _header_values(session, set(studies) | set(base_studies))
    weekly: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for study_id, arrived in studies.items():
        for name, value in values[study_id].items():
            weekly[week_start(arrived)][name].append(value)
    weeks = sorted(weekly)
    out: dict[str, list[dict[str, Any]]] = {}
    alerts: list[DriftAlert] = []
    for name in ("manufacturer", "kvp", "pixel_spacing"):
        baseline = [values[i][name] for i in base_studies if name in values[i]]
        judged = len(baseline) >= thresholds.min_baseline_n
        rows = []
        if name == "manufacturer":
            categories = sorted({v for w in weeks for v in weekly[w][name]} | set(baseline))
            expected = [Counter(baseline)[c] for c in categories]
        else:
            # Edges at the baseline's deciles: each baseline tenth is one bin, whatever the unit.
            edges = np.unique(np.quantile(baseline, np.linspace(0, 1, 11))) if baseline else np.array([])
            expected = _binned(baseline, edges)
        for week in weeks:
            week_values = weekly[week][name]
            if name == "manufacturer":
                counts = Counter(week_values)
                actual = [counts[c] for c in categories]
                summary: Any = dict(counts)
            else:
                actual = _binned(week_values, edges)
                summary = float(np.median(week_values)) if week_values else None
            value = psi(expected, actual) if week_values and sum(expected) else None
            rows.append({"week": week, "n": len(week_values), "summary": summary, "psi": value, "baseline_n": len(baseline)})
            if judged and value is not None and value > thresholds.psi_alert and len(week_values) >= thresholds.min_week_n:
                alerts.append(
                    DriftAlert(week, f"header_{name}", value, thresholds.psi_alert, f"{name} PSI {value:.3f} vs first weeks")
                )
        out[name] = rows
    return out, alerts


def _arrivals(session: Session, task: str, since: datetime | None, until: datetime | None) -> dict[int, datetime]:
    query = select(Study.id, Study.first_received_at).where(Study.task == task)
    if since:
        query = query.where(Study.first_received_at >= since)
    if until:
        query = query.where(Study.first_received_at < until)
    return {study_id: arrived for study_id, arrived in session.execute(query)}


def _header_values(session: Session, study_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Manufacturer (first series), kVp and pixel spacing (first instance) of each study, where known."""
    values: dict[int, dict[str, Any]] = {i: {} for i in study_ids}
    for study_id, headers in session.execute(
        select(Series.study_id, Series.headers).where(Series.study_id.in_(study_ids)).order_by(Series.id)
    ):
        values[study_id].setdefault("manufacturer", str((headers or {}).get("Manufacturer") or "unknown"))
    first_paths: dict[int, str] = {}
    for study_id, path in session.execute(
        select(Instance.study_id, Instance.path).where(Instance.study_id.in_(study_ids)).order_by(Instance.id)
    ):
        first_paths.setdefault(study_id, path)
    for study_id, found in values.items():
        found.setdefault("manufacturer", "unknown")
        if study_id in first_paths:
            kvp, spacing = _instance_numbers(first_paths[study_id])
            if kvp is not None:
                found["kvp"] = kvp
            if spacing is not None:
                found["pixel_spacing"] = spacing
    return values


def _binned(values: Sequence[float], edges: np.ndarray) -> list[int]:
    if len(edges) < 2:
        # One distinct baseline value: same value or not.
        same = sum(1 for v in values if len(edges) and v == edges[0])
        return [same, len(values) - same]
    inner = np.searchsorted(edges[1:-1], np.asarray(values, dtype=float), side="right")
    return [int(c) for c in np.bincount(inner, minlength=len(edges) - 1)]
