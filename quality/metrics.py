"""How each model version performs in this hospital: its scores paired with the radiologists' final reads.

No torch here: the serving app mounts the quality pages, and they import this module.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inference.dicom_dates import dicom_date
from inference.tables import ScoreResult as ScoreRow
from inference.tables import Series, Study
from quality.statistics import (
    auroc,
    bootstrap_auroc,
    bootstrap_brier,
    clustered_wilson_interval,
    reliability,
    wilson_interval,
)
from service.audit import query_audit
from service.lifecycle import StudyStatus
from worklist.tables import FinalRead, FinalReadFinding

__all__ = [
    "PairedCase",
    "PairedCases",
    "Proportion",
    "QualityMetrics",
    "UnscoredReads",
    "load_paired_cases",
    "sensitivity_over_read",
    "compute_metrics",
    "subgroup_metrics",
    "age_band",
    "roc_points",
    "SUBGROUP_KEYS",
    "screening_flag_outcomes",
    "time_to_read_around",
]

# Bands that follow the clinical split of the tasks (paediatric chest films, screening-age mammography).
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 50, "40-49"), (50, 70, "50-69"), (70, 200, "70+"))
SUBGROUP_KEYS = ("manufacturer", "station", "age_band", "sex")
# The audit row `medscreen export-training` writes per exported study (training/export_training.py; quality review
# may not import training): a version first used after a study's export may have been trained on it.
STUDY_EXPORT_ACTION = "study.export"


@dataclass(frozen=True)
class PairedCase:
    """One scored study revision of one model version, with the final read of the same study and task."""

    study_id: int
    study_instance_uid: str
    task: str
    model_name: str
    model_version: str
    role: str
    score: float
    threshold: float
    flagged: bool
    truth: bool
    arrived_at: datetime
    read_at: datetime
    scored_at: datetime
    manufacturer: str
    station: str
    age_band: str
    sex: str
    # studies.patient_id: an inpatient's daily films are one patient's, not independent observations.
    patient_id: str = ""

    @property
    def patient(self) -> str:
        """Whom the study belongs to, for clustering; a study without a patient ID counts as its own patient."""
        return self.patient_id or f"study:{self.study_instance_uid}"


@dataclass(frozen=True)
class Proportion:
    value: float
    successes: int
    total: int
    ci_low: float
    ci_high: float
    # The patients behind ``total`` (None when the proportion was counted without them).
    patients: int | None = None

    @classmethod
    def of(cls, successes: int, total: int) -> Proportion:
        low, high = wilson_interval(successes, total)
        return cls(successes / total if total else float("nan"), successes, total, low, high)

    @classmethod
    def over(cls, hits: np.ndarray, patients: np.ndarray) -> Proportion:
        """The share of ``hits``, each item with its patient: a Wilson interval widened by the design effect of
        patients with several studies (the plain Wilson interval when each patient has one)."""
        hits = np.asarray(hits, dtype=bool)
        low, high = clustered_wilson_interval(hits, patients)
        total = len(hits)
        successes = int(hits.sum())
        return cls(successes / total if total else float("nan"), successes, total, low, high, len(set(patients.tolist())))

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


@dataclass(frozen=True)
class QualityMetrics:
    n: int
    n_positive: int
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    flag_rate: Proportion
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    brier: float
    ece: float
    reliability: list[dict[str, float]] = field(default_factory=list)
    median_hours_to_read_all: float | None = None
    median_hours_to_read_positive: float | None = None
    brier_ci_low: float = float("nan")
    brier_ci_high: float = float("nan")
    # The patients behind n and n_positive: intervals are over patients when some have several studies.
    n_patients: int = 0
    n_patients_positive: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


@dataclass(frozen=True)
class UnscoredReads:
    """Studies of one version a radiologist read whose latest result carries no score, by outcome and final read,
    and scored ones left out because the version may have been trained on them.

    Unscored studies cannot enter the figures (there is no score to pair with the read), but leaving them out unsaid
    made a version that failed on five positive studies report sensitivity 1.000 on the ten it did score. A study
    exported for training (``medscreen export-training``) before the version's first result may be in its training
    data: a network is right on its own training films, so those studies are left out too, and counted.
    """

    could_not_score: int = 0
    could_not_score_positive: int = 0
    out_of_scope: int = 0
    out_of_scope_positive: int = 0
    trained_on: int = 0
    trained_on_positive: int = 0
    # Whose the could-not-score positives are (``PairedCase.patient``), for the interval of the sensitivity over
    # read studies: never in the API or the report.
    could_not_score_positive_patients: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def n(self) -> int:
        return self.could_not_score + self.out_of_scope

    @property
    def read_positive(self) -> int:
        return self.could_not_score_positive + self.out_of_scope_positive

    def add(self, outcome: str, positive: bool, patient: str = "") -> UnscoredReads:
        if outcome == "trained_on":
            return replace(self, trained_on=self.trained_on + 1, trained_on_positive=self.trained_on_positive + positive)
        if outcome == StudyStatus.out_of_scope:
            return replace(self, out_of_scope=self.out_of_scope + 1, out_of_scope_positive=self.out_of_scope_positive + positive)
        return replace(
            self, could_not_score=self.could_not_score + 1, could_not_score_positive=self.could_not_score_positive + positive,
            could_not_score_positive_patients=self.could_not_score_positive_patients + ((patient,) if positive else ()),
        )

    def share_could_not_score(self, scored: int) -> float:
        """Could-not-score studies among the read studies in intended use (``scored`` of them were scored); NaN when
        there are none. Out-of-scope studies are in neither count: the version was never meant to score them."""
        in_scope = scored + self.could_not_score
        return self.could_not_score / in_scope if in_scope else float("nan")

    def sentence(self) -> str:
        """What the figures over scored studies leave out, in words, for the report and the API."""
        trained = ""
        if self.trained_on:
            one = self.trained_on == 1
            trained = (
                f" {self.trained_on} scored {'study' if one else 'studies'} ({self.trained_on_positive} read positive) "
                f"{'was' if one else 'were'} left out of the figures: exported for training before this version's first "
                f"result, {'it' if one else 'they'} may be in its training data."
            )
        if not self.n:
            return "No study read by a radiologist was left unscored by this version." + trained
        parts = []
        if self.could_not_score:
            parts.append(f"could not score: {self.could_not_score}, of them read positive: {self.could_not_score_positive}")
        if self.out_of_scope:
            parts.append(f"outside intended use: {self.out_of_scope}, of them read positive: {self.out_of_scope_positive}")
        verb = "was" if self.n == 1 else "were"
        return (
            f"{self.n} {'study' if self.n == 1 else 'studies'} read by a radiologist {verb} not scored by this version "
            f"({'; '.join(parts)}); the figures above are over scored studies only."
        ) + trained

    def to_dict(self) -> dict[str, Any]:
        def counts(n: int, positive: int) -> dict[str, int]:
            return {"n": n, "read_positive": positive, "read_negative": n - positive}

        return {
            **counts(self.n, self.read_positive),
            "could_not_score": counts(self.could_not_score, self.could_not_score_positive),
            "out_of_scope": counts(self.out_of_scope, self.out_of_scope_positive),
            "trained_on": counts(self.trained_on, self.trained_on_positive),
            "note": self.sentence(),
        }


class PairedCases(list[PairedCase]):
    """The paired cases, with the read studies left out of them (no score, or possibly trained on) counted per
    (task, model version).

    A list, so that every caller that only wants the cases (figures, subgroups, steering evidence) reads them
    as before; the report, the API and the gate also read ``unscored``, and the gate ``trained_on``.
    """

    def __init__(
        self,
        cases: Iterable[PairedCase] = (),
        unscored: dict[tuple[str, str], UnscoredReads] | None = None,
        trained_on: dict[tuple[str, str], set[int]] | None = None,
    ):
        super().__init__(cases)
        self.unscored: dict[tuple[str, str], UnscoredReads] = dict(unscored or {})
        # Per (task, version): the scored, read studies left out because it may have been trained on them.
        self.trained_on: dict[tuple[str, str], set[int]] = dict(trained_on or {})

    def unscored_of(self, task: str, model_version: str) -> UnscoredReads:
        return self.unscored.get((task, model_version), UnscoredReads())

    def trained_on_of(self, task: str, model_version: str) -> set[int]:
        return self.trained_on.get((task, model_version), set())


def sensitivity_over_read(
    metrics: QualityMetrics, unscored: UnscoredReads, cases: Sequence[PairedCase] | None = None
) -> Proportion:
    """Sensitivity over every read study in intended use: a positive the version could not score is a positive it
    did not find. Out-of-scope positives are not the version's to find, so they stay out (counted, not folded in).

    With the ``cases`` behind ``metrics`` its interval is over patients, as every other figure's (the design effect of
    patients with several studies): it had been the plain Wilson interval beside the widened ones, 0.437-0.837 for 12
    of 18 films of three inpatients, six films each, where the patients give 0.208-0.939."""
    if cases is None:
        return Proportion.of(metrics.tp, metrics.tp + metrics.fn + unscored.could_not_score_positive)
    positives = [c for c in cases if c.truth]
    missing = unscored.could_not_score_positive
    patients = list(unscored.could_not_score_positive_patients[:missing])
    patients += [f"unscored:{i}" for i in range(missing - len(patients))]  # counted without a patient: its own
    hits = np.array([c.flagged for c in positives] + [False] * missing, dtype=bool)
    return Proportion.over(hits, np.array([c.patient for c in positives] + patients, dtype=str))


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined figures (no positives, one class only) become null."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def age_band(birth_date: str, on: str) -> str:
    """The patient's age band on the study date (DICOM DA strings); ``unknown`` when either is missing."""
    born, seen = dicom_date(birth_date), dicom_date(on)
    if born is None or seen is None:
        return "unknown"
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    for low, high, name in AGE_BANDS:
        if low <= years < high:
            return name
    return "unknown"


def load_paired_cases(
    session: Session,
    *,
    task: str | None = None,
    model_version: str | None = None,
    role: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> PairedCases:
    """Scored results joined with the final read of their study for their task.

    Per study and model version only the result of the latest revision counts (a rescore supersedes), and
    per study only the latest final read (an amended read replaces the first). The period filters on arrival.
    The latest revision is picked among all outcomes: when it could not be scored the study is left out (an
    earlier revision's score had been counted, for images that are not the study as it was read). Studies left
    out so (could not score, outside intended use) are counted in ``unscored``, per task and version, by final read.
    So are scored studies the version may have been trained on, which are left out as well: a ``study.export``
    audit row for the task at or before the version's first result (any outcome) means the study was in an export
    a retrain could have used (the export folder may be moved before training, so no path ties the two; a version
    first used after the export is left without them even if it was trained elsewhere).
    """
    query = (
        select(ScoreRow, Study, FinalRead, FinalReadFinding.present)
        .join(Study, Study.id == ScoreRow.study_id)
        .join(FinalRead, FinalRead.study_id == ScoreRow.study_id)
        .join(FinalReadFinding, (FinalReadFinding.read_id == FinalRead.id) & (FinalReadFinding.task == ScoreRow.task))
    )
    if task:
        query = query.where(ScoreRow.task == task)
    if model_version:
        query = query.where(ScoreRow.model_version == model_version)
    if role:
        query = query.where(ScoreRow.role == role)
    if since:
        query = query.where(Study.first_received_at >= since)
    if until:
        query = query.where(Study.first_received_at < until)
    latest: dict[tuple[int, str, str], tuple[ScoreRow, Study, FinalRead, bool]] = {}
    for result, study, read, present in session.execute(query):
        key = (study.id, result.model_name, result.model_version)
        kept = latest.get(key)
        if kept is None or (result.revision, result.id, read.read_at, read.id) > (
            kept[0].revision,
            kept[0].id,
            kept[2].read_at,
            kept[2].id,
        ):
            latest[key] = (result, study, read, bool(present))
    unscored: dict[tuple[str, str], UnscoredReads] = {}
    for result, study, _, present in latest.values():
        if not _usable(result):
            version = (result.task, result.model_version)
            patient = study.patient_id or f"study:{study.study_instance_uid}"  # as PairedCase.patient
            unscored[version] = unscored.get(version, UnscoredReads()).add(result.outcome, present, patient)
    latest = {key: kept for key, kept in latest.items() if _usable(kept[0])}
    trained_on: dict[tuple[str, str], set[int]] = {}
    for key in _possibly_trained_on(session, latest):
        result, study, _, present = latest.pop(key)
        version = (result.task, result.model_version)
        trained_on.setdefault(version, set()).add(study.id)
        unscored[version] = unscored.get(version, UnscoredReads()).add("trained_on", present)
    headers = _first_series_headers(session, {key[0] for key in latest})
    cases = []
    for (study_id, _, _), (result, study, read, present) in sorted(latest.items(), key=lambda item: item[0]):
        header = headers.get(study_id, {})
        score = float(result.score or 0.0)  # never None here: only usable (scored) results are kept
        threshold = float(result.threshold if result.threshold is not None else 0.5)
        cases.append(
            PairedCase(
                study_id=study.id,
                study_instance_uid=study.study_instance_uid,
                task=result.task,
                model_name=result.model_name,
                model_version=result.model_version,
                role=result.role,
                score=score,
                threshold=threshold,
                flagged=result.call == "positive" if result.call else score >= threshold,
                truth=present,
                arrived_at=study.first_received_at,
                read_at=read.read_at,
                scored_at=result.created_at,
                manufacturer=str(header.get("Manufacturer") or "unknown"),
                station=str(header.get("StationName") or "unknown"),
                age_band=age_band(study.patient_birth_date, study.study_date),
                sex=study.patient_sex or "unknown",
                patient_id=study.patient_id or "",
            )
        )
    return PairedCases(cases, unscored, trained_on)


def _usable(result: ScoreRow) -> bool:
    return result.outcome == StudyStatus.scored and result.score is not None


def _possibly_trained_on(
    session: Session, latest: dict[tuple[int, str, str], tuple[ScoreRow, Study, FinalRead, bool]]
) -> list[tuple[int, str, str]]:
    """The keys of ``latest`` whose study was exported for its task at or before the version's first result."""
    if not latest:
        return []
    versions = {(result.task, result.model_version) for result, _, _, _ in latest.values()}
    first_result = {
        (task, version): at
        for task, version, at in session.execute(
            select(ScoreRow.task, ScoreRow.model_version, func.min(ScoreRow.created_at))
            .where(ScoreRow.model_version.in_({version for _, version in versions}))
            .group_by(ScoreRow.task, ScoreRow.model_version)
        )
        if (task, version) in versions
    }
    if not first_result:
        return []
    # Exports after every version's first result cannot have trained any of them.
    events, _ = query_audit(session, actions=[STUDY_EXPORT_ACTION], subject_type="study",
                            until=max(first_result.values()) + timedelta(microseconds=1))
    exported: dict[tuple[str, str], datetime] = {}  # (task, study UID) -> its first export
    for event in events:
        exported_key = (str((event.detail or {}).get("task", "")), event.subject_id)
        exported[exported_key] = min(event.at, exported.get(exported_key, event.at))
    out = []
    for key, (result, study, _, _) in latest.items():
        at = exported.get((result.task, study.study_instance_uid))
        first = first_result.get((result.task, result.model_version))
        if at is not None and first is not None and at <= first:
            out.append(key)
    return out


def _first_series_headers(session: Session, study_ids: set[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    if not study_ids:
        return found
    rows = session.execute(
        select(Series.study_id, Series.headers).where(Series.study_id.in_(study_ids)).order_by(Series.id)
    )
    for study_id, header in rows:
        found.setdefault(study_id, header or {})
    return found


def compute_metrics(cases: Sequence[PairedCase], *, n_boot: int = 1000, seed: int = 0) -> QualityMetrics:
    """Confusion-matrix figures with Wilson 95% CIs, AUROC with a bootstrap 95% CI, calibration, time to read.

    A patient's studies are not independent observations (an inpatient's daily films share the finding and the
    patient's score level): when some patient has several, the bootstraps resample patients and the Wilson
    intervals are widened by the design effect. With one study per patient the figures are the plain ones.
    """
    truth = np.array([c.truth for c in cases], dtype=int)
    scores = np.array([c.score for c in cases], dtype=float)
    flagged = np.array([c.flagged for c in cases], dtype=bool)
    patients = np.array([c.patient for c in cases], dtype=str)
    n_patients = len(set(patients.tolist()))
    groups = patients if n_patients < len(cases) else None
    positive = truth == 1
    tp, fn = int((flagged & positive).sum()), int((~flagged & positive).sum())
    fp, tn = int((flagged & ~positive).sum()), int((~flagged & ~positive).sum())
    both_classes = 0 < int(positive.sum()) < len(cases)
    area = auroc(truth, scores) if both_classes else float("nan")
    low, high = (
        bootstrap_auroc(truth, scores, n_boot=n_boot, seed=seed, groups=groups) if both_classes else (float("nan"),) * 2
    )
    table, ece = reliability(truth, scores) if len(cases) else ([], float("nan"))
    brier_low, brier_high = bootstrap_brier(truth, scores, n_boot=n_boot, seed=seed, groups=groups)
    hours = [(c.read_at - c.arrived_at).total_seconds() / 3600 for c in cases]
    hours_positive = [h for h, c in zip(hours, cases, strict=True) if c.truth]
    return QualityMetrics(
        n=len(cases),
        n_positive=int(positive.sum()),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=Proportion.over(flagged[positive], patients[positive]),
        specificity=Proportion.over(~flagged[~positive], patients[~positive]),
        ppv=Proportion.over(positive[flagged], patients[flagged]),
        npv=Proportion.over(~positive[~flagged], patients[~flagged]),
        flag_rate=Proportion.over(flagged, patients),
        auroc=area,
        auroc_ci_low=low,
        auroc_ci_high=high,
        brier=float(np.mean((scores - truth) ** 2)) if len(cases) else float("nan"),
        ece=ece,
        reliability=table,
        median_hours_to_read_all=median(hours) if hours else None,
        median_hours_to_read_positive=median(hours_positive) if hours_positive else None,
        brier_ci_low=brier_low,
        brier_ci_high=brier_high,
        n_patients=n_patients,
        n_patients_positive=len(set(patients[positive].tolist())),
    )


def subgroup_metrics(
    cases: Iterable[PairedCase], *, keys: Sequence[str] = SUBGROUP_KEYS, n_boot: int = 200
) -> dict[str, dict[str, QualityMetrics]]:
    """The same figures per manufacturer, station, age band and sex (fewer bootstrap rounds: many groups)."""
    cases = list(cases)
    out: dict[str, dict[str, QualityMetrics]] = {}
    for key in keys:
        groups: dict[str, list[PairedCase]] = defaultdict(list)
        for case in cases:
            groups[str(getattr(case, key))].append(case)
        out[key] = {name: compute_metrics(group, n_boot=n_boot) for name, group in sorted(groups.items())}
    return out


def time_to_read_around(cases: Sequence[PairedCase], policy_since: datetime) -> dict[str, dict[str, Any]]:
    """Median hours from arrival to final read, all and with the finding, for studies that arrived before and
    after ``policy_since`` (when the worklist started ordering by the model): what prioritisation bought."""
    out: dict[str, dict[str, Any]] = {}
    for name, group in (
        ("before", [c for c in cases if c.arrived_at < policy_since]),
        ("after", [c for c in cases if c.arrived_at >= policy_since]),
    ):
        hours = [(c.read_at - c.arrived_at).total_seconds() / 3600 for c in group]
        positive = [h for h, c in zip(hours, group, strict=True) if c.truth]
        out[name] = {
            "n": len(group),
            "n_positive": len(positive),
            "median_hours_all": median(hours) if hours else None,
            "median_hours_positive": median(positive) if positive else None,
        }
    return out


def roc_points(cases: Sequence[PairedCase]) -> list[tuple[float, float]]:
    """(1 - specificity, sensitivity) at every distinct score, from (0, 0) to (1, 1), for the ROC plot."""
    truth = np.array([c.truth for c in cases], dtype=bool)
    scores = np.array([c.score for c in cases], dtype=float)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return []
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        above = scores >= threshold
        points.append((float((above & ~truth).sum() / n_neg), float((above & truth).sum() / n_pos)))
    return points


def screening_flag_outcomes(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per screener version: children screened, flags raised (with the flag rate), flags a paediatrician decided,
    and the share referred (the flags' PPV).

    Unflagged children get no outcome, so sensitivity cannot be measured from these records; only the PPV can.
    Children screened over HTTP are all stored, so they are counted from the rows; a ``screen-emr`` run stores
    only its flagged, incomplete and retiring children, so its own counts (``ScreeningBatchRun``) are taken
    instead: counting its rows gave a flag rate near 100%. A version with batch results but no run counts (stored
    before runs recorded them) has no screened count or flag rate (null), rather than a wrong one.
    """
    from screening.tables import BATCH_ACTOR_PREFIX, ScreeningBatchRun, ScreeningOutcome, ScreeningRun

    # Decisions are append-only (a changed decision is a new row): only each flag's latest one counts,
    # or a flag first referred and then judged not relevant would count as both, and as two children.
    latest = select(func.max(ScreeningOutcome.id)).group_by(ScreeningOutcome.result_id).scalar_subquery()
    query = select(
        ScreeningRun.model_version, ScreeningRun.flagged, ScreeningRun.status, ScreeningRun.submitted_by, ScreeningOutcome.outcome
    ).outerjoin(ScreeningOutcome, (ScreeningOutcome.result_id == ScreeningRun.id) & ScreeningOutcome.id.in_(latest))
    runs = select(ScreeningBatchRun.model_version, ScreeningBatchRun.screened, ScreeningBatchRun.flagged)
    if since:
        query = query.where(ScreeningRun.screened_at >= since)
        runs = runs.where(ScreeningBatchRun.ran_at >= since)
    if until:
        query = query.where(ScreeningRun.screened_at < until)
        runs = runs.where(ScreeningBatchRun.ran_at < until)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for version, flagged, status, submitted_by, outcome in session.execute(query):
        c = counts[version]
        if submitted_by.startswith(BATCH_ACTOR_PREFIX):
            c["batch_rows"] += 1
        elif status in ("screened", "incomplete"):  # as a run counts: children a flag could be raised on
            c["screened"] += 1
            c["flagged"] += int(bool(flagged))
        c["flags_stored"] += int(bool(flagged))
        if outcome:
            c[outcome] += 1
    for version, run_screened, run_flagged in session.execute(runs):
        counts[version]["screened"] += run_screened
        counts[version]["flagged"] += run_flagged
        counts[version]["runs"] += 1
    out = []
    for version, c in sorted(counts.items()):
        decided = c["referred"] + c["not_relevant"]
        known = not c["batch_rows"] or c["runs"] > 0
        out.append(
            {
                "model_version": version,
                "screened": c["screened"] if known else None,
                "flagged": c["flagged"] if known else None,
                "flag_rate": _finite(asdict(Proportion.of(c["flagged"], c["screened"]))) if known else None,
                "batch_runs": c["runs"],
                "flags_stored": c["flags_stored"],
                "decided": decided,
                "referred": c["referred"],
                "ppv": _finite(asdict(Proportion.of(c["referred"], decided))),
            }
        )
    return out
