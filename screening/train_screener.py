"""Train and evaluate the risk model on projected phenopacket cases vs simulated controls.

Evaluation predicts unseen gene cohorts: cross-validation groups the cases by gene cohort (the folder
a phenopacket lives in), so every case is scored by a model that never saw a case of its gene, and the
operating point of each fold is taken from the controls of the other folds. Each projection of
``screening/simulate.py`` (ICD-10-, SNOMED- and HPO-coded records, 30% to 90% of features kept, ordinary
controls or hard negatives only) is reported on its own, and the worst is the headline: the other site
codes its records its own way, and we do not know which. Two counts are reported beside as baselines: of
every distinct finding, and of the informative findings (the commonplace childhood illnesses left out, as the
screener leaves them out: its feature 0, no training). The second is the fair one: the commonplace list, not the
fitted weights, gives most of the screener's margin over the first. The knowledge (``phenotype.hpoa``) needs no
training; only the few non-negative weights of the risk model are fitted, on all projections together.

Sensitivity at a fixed flag rate is read off the controls (at 1% flags, the top 20 of 2,000), so its interval
resamples the controls with the cases' gene cohorts, the threshold recomputed in each resample.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from datasets.phenopackets import PhenopacketCase, iter_phenopackets
from screening.features import FEATURE_CAPS, FEATURE_NAMES, ChildScores, score_child
from screening.findings import CodeMaps, extract_findings
from screening.knowledge import KnowledgeBase
from screening.metrics import flag_rate_threshold, resampled_sensitivity_at_rate, screening_metrics
from screening.ranking import candidate_rank, ranking_report
from screening.risk_model import KNOTS, RiskModel, expand
from screening.simulate import PROJECTIONS, CaseProjector, Projection, add_everyday, recode, simulate_controls

__all__ = [
    "ProjectionData",
    "build_projection",
    "fit_risk_model",
    "evaluate",
    "train_and_evaluate",
    "EvaluationReport",
    "load_cases",
    "cohort_of",
]

logger = logging.getLogger(__name__)

L2 = 1e-3  # a light ridge: the weights are few and the data many
BOOTSTRAP = 300
# The goal of issue 13: sensitivity >= 0.85 at no more than 1.5% flags of ordinary children, in every
# projection; reported beside the alert budget (1%), which is what the service is set to.
GOAL_FLAG_RATE = 0.015


def cohort_of(case: PhenopacketCase) -> str:
    """The gene cohort of a phenopacket-store case: the folder it lives in."""
    return Path(case.path).parent.name


@dataclass
class ProjectionData:
    projection: Projection
    features: np.ndarray
    labels: np.ndarray
    groups: list[str]  # gene cohort for cases, control-<fold slot> for controls
    finding_count: np.ndarray  # baseline: every distinct finding, commonplace childhood illness included
    organ_systems: np.ndarray
    # per case (not per control): where the case's disease is among the served candidates of its EMR record,
    # ranked on the findings beyond commonplace illness as served, and on all findings (inf: not annotated)
    candidate_ranks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    candidate_ranks_all_findings: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def informative_count(self) -> np.ndarray:
        """The fair baseline: distinct findings beyond commonplace childhood illness, i.e. the screener's own
        feature 0 (capped at 16; no threshold at 1% or 1.5% flags reaches the cap: they lie at 2-5 findings)."""
        return np.round(self.features[:, 0] * FEATURE_CAPS["informative_findings"])


def scored_cases(
    cases: list[PhenopacketCase], projection: Projection, kb: KnowledgeBase, maps: CodeMaps, seed: int
) -> Iterator[tuple[PhenopacketCase, ChildScores]]:
    """Each case's EMR record under ``projection``, scored, as the evaluation projects it (seeded per projection;
    a case the projection leaves without a record is skipped)."""
    projector = CaseProjector(maps)
    rng = random.Random(f"{seed}-{projection.name}")
    for case in cases:
        projected = projector.project(case, rng, projection)
        if projected is None:
            continue
        record, as_of = projected
        yield case, score_child(extract_findings(record, maps, as_of), kb)


def build_projection(
    cases: list[PhenopacketCase], projection: Projection, kb: KnowledgeBase, maps: CodeMaps, n_controls: int, seed: int
) -> ProjectionData:
    rows, labels, groups, counts, systems = [], [], [], [], []
    ranks: tuple[list[float], list[float]] = ([], [])
    for case, scored in scored_cases(cases, projection, kb, maps, seed):
        rows.append(scored.features)
        labels.append(1)
        groups.append(cohort_of(case))
        counts.append(scored.finding_count)
        systems.append(scored.organ_systems)
        for kept, all_findings in zip(ranks, (False, True), strict=True):
            kept.append(candidate_rank(kb, scored.observed, scored.excluded, scored.sex, scored.age_days, case.diseases, all_findings))
    everyday_rng = random.Random(f"{seed}-{projection.name}-everyday")
    for i, (record, as_of) in enumerate(
        simulate_controls(maps, n_controls, seed + 1, hard_fraction=projection.hard_fraction)
    ):
        record = recode(record, maps, projection.coding)
        if projection.everyday:
            record = add_everyday(record, everyday_rng, projection.everyday, as_of)
        child = extract_findings(record, maps, as_of)
        scored = score_child(child, kb)
        rows.append(scored.features)
        labels.append(0)
        groups.append(f"control-{i % 10}")
        counts.append(scored.finding_count)
        systems.append(scored.organ_systems)
    return ProjectionData(
        projection,
        np.array(rows).reshape(-1, len(FEATURE_NAMES)),
        np.array(labels),
        groups,
        np.array(counts, dtype=np.float64),
        np.array(systems, dtype=np.float64),
        np.array(ranks[0]),
        np.array(ranks[1]),
    )


def fit_risk_model(features: np.ndarray, labels: np.ndarray, prevalence: float, version: str) -> RiskModel:
    """Logistic regression on the pieces of the features (``risk_model.expand``) with non-negative
    weights, cases and controls balanced (L-BFGS-B)."""
    x = expand(features, KNOTS)
    y = np.asarray(labels, dtype=np.float64)
    weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    n = x.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:n] + theta[n]
        p = 1.0 / (1.0 + np.exp(-z))
        # log(1 + e^z) - y z, stably
        value = float(np.sum(weight * (np.logaddexp(0.0, z) - y * z))) + L2 * float(theta[:n] @ theta[:n])
        residual = weight * (p - y)
        grad = np.concatenate([x.T @ residual + 2 * L2 * theta[:n], [residual.sum()]])
        return value, grad

    bounds = [(0.0, None)] * n + [(None, None)]
    result = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return RiskModel(
        version=version,
        feature_names=list(FEATURE_NAMES),
        coef=[float(max(c, 0.0)) for c in result.x[:n]],
        intercept=float(result.x[n]),
        train_prevalence=0.5,
        prevalence=prevalence,
        knots=list(KNOTS),
    )


@dataclass
class EvaluationReport:
    summary: dict[str, Any]
    oof_risk: dict[str, np.ndarray]  # per projection
    data: list[ProjectionData]


def _fold_of(groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Whole gene cohorts (and control slots) to folds, shuffled once, sizes balanced."""
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    slot = {name: i % folds for i, name in enumerate(names)}
    return np.array([slot[g] for g in groups])


def _threshold(risks: list[tuple[np.ndarray, np.ndarray]], prevalence: float, budget: float) -> float:
    """The lowest threshold keeping every projection's expected flag rate within the budget."""
    return max(flag_rate_threshold(cases, controls, prevalence, budget)[0] for cases, controls in risks)


def _cohort_interval(flagged: np.ndarray, cohorts: list[str], seed: int) -> tuple[float, float]:
    """95% interval of the share flagged, resampling whole gene cohorts."""
    names = sorted(set(cohorts))
    by = {n: [] for n in names}  # type: dict[str, list[float]]
    for f, c in zip(flagged, cohorts, strict=True):
        by[c].append(float(f))
    sums = np.array([sum(by[n]) for n in names])
    sizes = np.array([len(by[n]) for n in names])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), size=(BOOTSTRAP, len(names)))
    shares = sums[picks].sum(axis=1) / np.maximum(sizes[picks].sum(axis=1), 1)
    return float(np.quantile(shares, 0.025)), float(np.quantile(shares, 0.975))


def _resamples(cohorts: list[str], n_controls: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``BOOTSTRAP`` resamples as multiplicities: of each case (its whole gene cohort drawn with replacement) and of
    each control (each an independent simulated child, drawn with replacement). One draw per projection, shared by
    the screener and the baselines, so their differences are paired."""
    names = sorted(set(cohorts))
    index = {n: i for i, n in enumerate(names)}
    case_cohort = np.array([index[c] for c in cohorts], dtype=np.int64)
    rng = np.random.default_rng(seed)

    def multiplicities(picks: np.ndarray, size: int) -> np.ndarray:
        offsets = np.arange(len(picks))[:, None] * size
        return np.bincount((picks + offsets).ravel(), minlength=len(picks) * size).reshape(len(picks), size)

    cohort_counts = multiplicities(rng.integers(0, len(names), size=(BOOTSTRAP, len(names))), len(names))
    control_counts = multiplicities(rng.integers(0, n_controls, size=(BOOTSTRAP, n_controls)), n_controls)
    return cohort_counts[:, case_cohort], control_counts


def _sensitivity_at_rate(
    cases: np.ndarray, controls: np.ndarray, resamples: tuple[np.ndarray, np.ndarray], prevalence: float, rate: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Sensitivity at exactly ``rate`` flags (ROC point, ties split), with a 95% interval from ``resamples`` of the
    cases' gene cohorts and of the controls, the threshold recomputed in each (the threshold is read off some 20-30
    controls, whose sampling error a fixed threshold would leave out); and the resampled values, for paired
    differences."""
    threshold, tie, _ = flag_rate_threshold(cases, controls, prevalence, rate)
    sensitivity = float(np.mean((cases > threshold) + tie * (cases == threshold)))
    resampled = resampled_sensitivity_at_rate(cases, controls, *resamples, prevalence, rate)
    low, high = np.quantile(resampled, [0.025, 0.975])
    point = {"flag_rate": rate, "sensitivity": round(sensitivity, 4), "sensitivity_95ci": [round(float(low), 4), round(float(high), 4)]}
    return point, resampled


def _at_rates(
    scores: dict[str, np.ndarray], d: ProjectionData, resamples: tuple[np.ndarray, np.ndarray], prevalence: float,
    rates: list[float],
) -> dict[str, dict[str, Any]]:
    """Per score (the screener's risk and the baselines), sensitivity at each flag rate with its interval, and the
    screener minus the count of informative findings with its paired interval."""
    cases, controls = d.labels == 1, d.labels == 0
    out: dict[str, dict[str, Any]] = {name: {} for name in scores}
    differences: dict[str, Any] = {}
    for rate in rates:
        key = f"{rate:g}"
        resampled = {}
        for name, score in scores.items():
            out[name][key], resampled[name] = _sensitivity_at_rate(score[cases], score[controls], resamples, prevalence, rate)
        gap = resampled["screener"] - resampled["informative_count"]
        low, high = np.quantile(gap, [0.025, 0.975])
        differences[key] = {
            "difference": round(out["screener"][key]["sensitivity"] - out["informative_count"][key]["sensitivity"], 4),
            "difference_95ci": [round(float(low), 4), round(float(high), 4)],
        }
    out["screener_minus_informative_count"] = differences
    return out


def _sets_threshold(projection: Projection) -> bool:
    """Whether a projection's controls choose the operating point: ordinary children coded as the simulator codes
    them. Not the hard-negative projection (every child has one) and not the everyday one: its controls carry three
    everyday episodes in SNOMED CT each, and a threshold holding the budget there flagged 0.1% of the other
    projections' controls and cost 0.09-0.13 of their sensitivity. Its flag rate at the threshold is reported, and
    ``screen-emr`` says when a run flags beyond twice the budget."""
    return projection.hard_fraction < 1.0 and not projection.everyday


def evaluate(data: list[ProjectionData], prevalence: float, budget: float, folds: int = 5, seed: int = 0) -> EvaluationReport:
    """Out-of-fold risks by gene-cohort-grouped cross-validation, per projection, with the baseline."""
    all_groups = sorted({g for d in data for g in d.groups})
    slot = dict(zip(all_groups, _fold_of(all_groups, folds, seed), strict=True))
    fold_ids = [np.array([slot[g] for g in d.groups]) for d in data]
    oof = [np.zeros(len(d.labels)) for d in data]
    flagged = [np.zeros(len(d.labels), dtype=bool) for d in data]
    ordinary = [i for i, d in enumerate(data) if _sets_threshold(d.projection)] or list(range(len(data)))
    for fold in range(folds):
        train_x = np.concatenate([d.features[f != fold] for d, f in zip(data, fold_ids, strict=True)])
        train_y = np.concatenate([d.labels[f != fold] for d, f in zip(data, fold_ids, strict=True)])
        model = fit_risk_model(train_x, train_y, prevalence, f"fold-{fold}")
        # The fold's operating point comes from the training folds, as a new site's would.
        seen = []
        for i in ordinary:
            d, f = data[i], fold_ids[i]
            r = model.risk(d.features[f != fold])
            y = d.labels[f != fold]
            seen.append((r[y == 1], r[y == 0]))
        threshold = _threshold(seen, prevalence, budget)
        for i, (d, f) in enumerate(zip(data, fold_ids, strict=True)):
            oof[i][f == fold] = model.risk(d.features[f == fold])
            flagged[i][f == fold] = oof[i][f == fold] >= threshold
    projections: dict[str, Any] = {}
    for i, d in enumerate(data):
        cases, controls = d.labels == 1, d.labels == 0
        model_metrics = screening_metrics(oof[i][cases], oof[i][controls], prevalence, budget)
        counting = screening_metrics(d.finding_count[cases], d.finding_count[controls], prevalence, budget)
        systems = screening_metrics(d.organ_systems[cases], d.organ_systems[controls], prevalence, budget)
        informative = screening_metrics(d.informative_count[cases], d.informative_count[controls], prevalence, budget)
        case_groups = [g for g, y in zip(d.groups, d.labels, strict=True) if y == 1]
        low, high = _cohort_interval(flagged[i][cases], case_groups, seed)
        at_rates = _at_rates(
            {"screener": oof[i], "finding_count": d.finding_count, "informative_count": d.informative_count},
            d, _resamples(case_groups, int(controls.sum()), seed), prevalence, sorted({budget, GOAL_FLAG_RATE}),
        )
        counting_at_goal = screening_metrics(d.finding_count[cases], d.finding_count[controls], prevalence, GOAL_FLAG_RATE)
        projections[d.projection.name] = {
            "coding": d.projection.coding,
            "features_kept": d.projection.keep,
            "controls_with_hard_negatives": d.projection.hard_fraction,
            "n_cases": int(cases.sum()),
            "n_cohorts": len(set(case_groups)),
            "n_controls": int(controls.sum()),
            **{k: v for k, v in model_metrics.as_dict().items() if k not in ("top1", "top10")},
            "sensitivity_at_flag_rate": at_rates["screener"],
            "baseline_finding_count_sensitivity_at_goal_flag_rate": round(counting_at_goal.sensitivity_at_budget, 4),
            "at_fold_thresholds": {
                "sensitivity": round(float(flagged[i][cases].mean()), 4),
                # the fold thresholds held (they come from the other folds' controls): gene cohorts resampled only
                "sensitivity_95ci_by_cohort": [round(low, 4), round(high, 4)],
                "control_flag_rate": round(float(flagged[i][controls].mean()), 4),
            },
            "baseline_finding_count": {
                **{k: v for k, v in counting.as_dict().items() if k not in ("top1", "top10")},
                "sensitivity_at_flag_rate": at_rates["finding_count"],
            },
            "baseline_informative_count": {
                **{k: v for k, v in informative.as_dict().items() if k not in ("top1", "top10")},
                "sensitivity_at_flag_rate": at_rates["informative_count"],
            },
            "screener_minus_informative_count": at_rates["screener_minus_informative_count"],
            "baseline_organ_systems": {k: v for k, v in systems.as_dict().items() if k not in ("top1", "top10")},
            "candidates": _candidate_summary(d),
        }
    worst = min(projections, key=lambda name: projections[name]["sensitivity_at_budget"])
    goal = f"{GOAL_FLAG_RATE:g}"
    worst_goal = min(projections, key=lambda name: projections[name]["sensitivity_at_flag_rate"][goal]["sensitivity"])
    summary: dict[str, Any] = {
        "prevalence": prevalence,
        "alert_budget": budget,
        "folds": folds,
        "grouped_by": "gene cohort",
        "n_cohorts": len({g for d in data for g, y in zip(d.groups, d.labels, strict=True) if y == 1}),
        "headline_projection": worst,
        "sensitivity_at_budget": projections[worst]["sensitivity_at_budget"],
        "baseline_finding_count_sensitivity_at_budget": projections[worst]["baseline_finding_count"]["sensitivity_at_budget"],
        "baseline_informative_count_sensitivity_at_budget": projections[worst]["baseline_informative_count"]["sensitivity_at_budget"],
        # issue 13: the screener must not fall below the count it is compared with; where the fair count beats it
        "below_informative_count": _below_informative_count(projections),
        "intervals": "95%; at 1% / 1.5% flags: gene cohorts of the cases and the controls resampled "
        f"({BOOTSTRAP} times), the threshold recomputed in each; at the fold thresholds: gene cohorts only, "
        "the thresholds held",
        "goal": {"flag_rate": GOAL_FLAG_RATE, "sensitivity": 0.85},
        "headline_projection_at_goal_flag_rate": worst_goal,
        "sensitivity_at_goal_flag_rate": projections[worst_goal]["sensitivity_at_flag_rate"][goal]["sensitivity"],
        "goal_met": all(p["sensitivity_at_flag_rate"][goal]["sensitivity"] >= 0.85 for p in projections.values()),
        "projections": projections,
    }
    return EvaluationReport(summary, {d.projection.name: oof[i] for i, d in enumerate(data)}, data)


def _below_informative_count(projections: dict[str, Any]) -> list[dict[str, Any]]:
    """Each projection and flag rate where counting the informative findings finds more cases than the screener."""
    return [
        {"projection": name, "flag_rate": float(rate), "screener": p["sensitivity_at_flag_rate"][rate]["sensitivity"],
         "informative_count": p["baseline_informative_count"]["sensitivity_at_flag_rate"][rate]["sensitivity"], **gap}
        for name, p in projections.items()
        for rate, gap in p["screener_minus_informative_count"].items()
        if gap["difference"] < 0
    ]


def _candidate_summary(d: ProjectionData) -> dict[str, Any]:
    """Top-1/3/10 of the cases' diseases among the served candidates of their EMR records (what the
    paediatrician sees), beside the same ranker given every finding, commonplace illness included."""
    if not len(d.candidate_ranks):
        return {}

    def tops(ranks: np.ndarray) -> dict[str, float]:
        return {f"top{k}": round(float(np.mean(ranks <= k)), 4) for k in (1, 3, 10)}

    return {**tops(d.candidate_ranks), "all_findings": tops(d.candidate_ranks_all_findings)}


def budget_curve(report: EvaluationReport, prevalence: float, points: int = 200) -> list[tuple[float, float]]:
    """(risk threshold, expected flag rate) pairs from out-of-fold risks; the rate is the highest over
    the projections with ordinary controls, so the budget holds whichever way the site codes."""
    ordinary = [d for d in report.data if _sets_threshold(d.projection)] or report.data
    pooled = np.concatenate([report.oof_risk[d.projection.name] for d in ordinary])
    thresholds = np.unique(np.quantile(pooled, np.linspace(0.5, 1.0, points)))
    curve = []
    for t in thresholds:
        rates = []
        for d in ordinary:
            r = report.oof_risk[d.projection.name]
            cases, controls = r[d.labels == 1], r[d.labels == 0]
            rates.append(prevalence * np.mean(cases >= t) + (1 - prevalence) * np.mean(controls >= t))
        curve.append((float(t), float(max(rates))))
    return curve


def load_cases(folder: Path) -> list[PhenopacketCase]:
    return list(iter_phenopackets(folder))


def build_all(
    cases: list[PhenopacketCase], kb: KnowledgeBase, maps: CodeMaps, n_controls: int, seed: int,
    projections: tuple[Projection, ...] = PROJECTIONS,
) -> list[ProjectionData]:
    return [build_projection(cases, p, kb, maps, n_controls, seed) for p in projections]


def evaluation_summary(
    cases: list[PhenopacketCase], kb: KnowledgeBase, maps: CodeMaps, *, prevalence: float, budget: float,
    n_controls: int, seed: int = 7, folds: int = 5,
) -> EvaluationReport:
    data = build_all(cases, kb, maps, n_controls, seed)
    report = evaluate(data, prevalence, budget, folds=folds, seed=seed)
    report.summary["ranking"] = ranking_report(cases, kb)
    return report


def train_and_evaluate(
    folder: Path,
    kb: KnowledgeBase,
    maps: CodeMaps,
    *,
    prevalence: float,
    budget: float,
    n_controls: int,
    seed: int = 7,
) -> tuple[RiskModel, EvaluationReport]:
    cases = load_cases(folder)
    report = evaluation_summary(cases, kb, maps, prevalence=prevalence, budget=budget, n_controls=n_controls, seed=seed)
    version = datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    x = np.concatenate([d.features for d in report.data])
    y = np.concatenate([d.labels for d in report.data])
    model = fit_risk_model(x, y, prevalence, version)
    model.budget_curve = budget_curve(report, prevalence)
    model.metrics = report.summary
    model.trained_on = {
        "phenopackets": folder.name,
        "n_cases": int(sum(int(d.labels.sum()) for d in report.data[:1])),
        "n_controls_per_projection": n_controls,
        "projections": [d.projection.name for d in report.data],
        "seed": seed,
        "threshold_at_budget": model.threshold_for(budget),
    }
    return model, report
