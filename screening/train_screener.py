"""Train and evaluate the risk model on projected phenopacket cases vs simulated controls.

Evaluation is cross-validated by disease (``GroupKFold`` over the OMIM id): a fold's cases have
diseases the model never saw, which is what a screener meets in practice. The knowledge scores need
no training (they come from ``phenotype.hpoa``); only the combining model is fitted. The shipped
model is fitted on all cases, with its alert threshold taken from the out-of-fold risks.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from datasets.phenopackets import PhenopacketCase, iter_phenopackets
from screening.features import FEATURE_NAMES, score_child
from screening.findings import CodeMaps, extract_findings
from screening.knowledge import KnowledgeBase
from screening.metrics import expected_rank, flag_rate_threshold, screening_metrics
from screening.risk_model import RiskModel
from screening.simulate import CaseProjector, simulate_controls

__all__ = ["Dataset", "build_dataset", "fit_risk_model", "evaluate", "train_and_evaluate", "EvaluationReport"]

logger = logging.getLogger(__name__)


@dataclass
class Dataset:
    features: np.ndarray
    labels: np.ndarray
    groups: list[str]
    organ_systems: np.ndarray  # baseline 1
    feature_count: np.ndarray  # baseline 2
    kb_ranks: list[float | None] = field(default_factory=list)  # per case
    curated_ranks: list[float | None] = field(default_factory=list)  # same, from the published HPO terms
    count_ranks: list[float | None] = field(default_factory=list)
    n_diseases: int = 0
    cases_with_findings: int = 0
    cases_with_annotated_disease: int = 0  # the case's OMIM disease is in phenotype.hpoa


def build_dataset(
    cases: list[PhenopacketCase], kb: KnowledgeBase, maps: CodeMaps, n_controls: int, seed: int
) -> Dataset:
    projector = CaseProjector(maps)
    rng = random.Random(seed)
    rows, labels, groups, systems, counts = [], [], [], [], []
    kb_ranks: list[float | None] = []
    count_ranks: list[float | None] = []
    curated_ranks: list[float | None] = []
    with_findings = 0
    for case in cases:
        projected = projector.project(case, rng)
        if projected is None:
            continue
        record, as_of = projected
        child = extract_findings(record, maps, as_of)
        scored = score_child(child, kb, keep_vectors=True)
        rows.append(scored.features)
        labels.append(1)
        disease = case.diseases[0] if case.diseases else "unknown"
        groups.append(disease)
        systems.append(scored.organ_systems)
        counts.append(scored.feature_count_max)
        with_findings += bool(scored.observed)
        index = kb.disease_index.get(disease)
        # Reference point: the same scorer on the curated HPO terms of the publication (what LIRICAL sees).
        curated = kb.indices({f.hpo for f in case.features if not f.excluded})
        curated_ranks.append(
            None
            if index is None or not curated
            else expected_rank(kb.scores(curated, kb.indices({f.hpo for f in case.features if f.excluded})), index)
        )
        if index is None or scored.kb_scores is None or scored.counts is None:
            kb_ranks.append(None)
            count_ranks.append(None)
        else:
            kb_ranks.append(expected_rank(scored.kb_scores, index))
            count_ranks.append(expected_rank(scored.counts, index))
    for i, (record, as_of) in enumerate(simulate_controls(maps, n_controls, seed + 1)):
        child = extract_findings(record, maps, as_of)
        scored = score_child(child, kb, baselines=True)
        rows.append(scored.features)
        labels.append(0)
        groups.append(f"control-{i % 5}")
        systems.append(scored.organ_systems)
        counts.append(scored.feature_count_max)
    return Dataset(
        features=np.array(rows),
        labels=np.array(labels),
        groups=groups,
        organ_systems=np.array(systems, dtype=np.float64),
        feature_count=np.array(counts),
        kb_ranks=kb_ranks,
        curated_ranks=curated_ranks,
        count_ranks=count_ranks,
        n_diseases=len({g for g, y in zip(groups, labels, strict=True) if y == 1}),
        cases_with_findings=with_findings,
        cases_with_annotated_disease=sum(r is not None for r in curated_ranks),
    )


def fit_risk_model(
    features: np.ndarray, labels: np.ndarray, prevalence: float, version: str, seed: int = 0
) -> RiskModel:
    base = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    calibrated = CalibratedClassifierCV(base, method="sigmoid", cv=5, ensemble=False)
    calibrated.fit(features, labels)
    fitted = calibrated.calibrated_classifiers_[0]
    pipeline, sigmoid = fitted.estimator, fitted.calibrators[0]
    scaler, logistic = pipeline.steps[0][1], pipeline.steps[1][1]
    return RiskModel(
        version=version,
        feature_names=list(FEATURE_NAMES),
        mean=[float(v) for v in scaler.mean_],
        scale=[float(v) for v in scaler.scale_],
        coef=[float(v) for v in logistic.coef_[0]],
        intercept=float(logistic.intercept_[0]),
        calibration_a=float(sigmoid.a_),
        calibration_b=float(sigmoid.b_),
        train_prevalence=float(np.mean(labels)),
        prevalence=prevalence,
    )


@dataclass
class EvaluationReport:
    summary: dict[str, Any]
    oof_risk: np.ndarray
    labels: np.ndarray


def evaluate(data: Dataset, prevalence: float, budget: float, folds: int = 5, seed: int = 0) -> EvaluationReport:
    """Out-of-fold risks by disease-grouped cross-validation, and metrics vs the two baselines."""
    n_groups = len(set(data.groups))
    splitter = GroupKFold(n_splits=min(folds, max(2, data.n_diseases)))
    oof = np.zeros(len(data.labels))
    for fold, (train, test) in enumerate(splitter.split(data.features, data.labels, data.groups)):
        model = fit_risk_model(data.features[train], data.labels[train], prevalence, f"fold-{fold}", seed)
        oof[test] = model.risk(data.features[test])
    cases, controls = data.labels == 1, data.labels == 0
    model_metrics = screening_metrics(oof[cases], oof[controls], prevalence, budget, data.kb_ranks)
    systems = screening_metrics(data.organ_systems[cases], data.organ_systems[controls], prevalence, budget)
    counts = screening_metrics(
        data.feature_count[cases], data.feature_count[controls], prevalence, budget, data.count_ranks
    )
    summary: dict[str, Any] = {
        "n_cases": int(cases.sum()),
        "n_controls": int(controls.sum()),
        "n_diseases": data.n_diseases,
        "cases_with_emr_findings": data.cases_with_findings,
        "cases_with_annotated_disease": data.cases_with_annotated_disease,
        "prevalence": prevalence,
        "alert_budget": budget,
        "folds": splitter.get_n_splits(),
        "groups": n_groups,
        **model_metrics.as_dict(),
        "curated_hpo_reference": {
            "top1": round(float(np.mean([r is not None and r <= 1 for r in data.curated_ranks])), 4),
            "top3": round(float(np.mean([r is not None and r <= 3 for r in data.curated_ranks])), 4),
            "top10": round(float(np.mean([r is not None and r <= 10 for r in data.curated_ranks])), 4),
        },
        "baselines": {
            "organ_system_count": {**systems.as_dict(), "top1": None, "top10": None},
            "unweighted_feature_sum": counts.as_dict(),
        },
    }
    return EvaluationReport(summary, oof, data.labels)


def budget_curve(oof: np.ndarray, labels: np.ndarray, prevalence: float, points: int = 200) -> list[tuple[float, float]]:
    """(risk threshold, expected population flag rate) pairs from out-of-fold risks."""
    cases, controls = oof[labels == 1], oof[labels == 0]
    thresholds = np.unique(np.quantile(oof, np.linspace(0.5, 1.0, points)))
    return [
        (float(t), float(prevalence * np.mean(cases >= t) + (1 - prevalence) * np.mean(controls >= t)))
        for t in thresholds
    ]


def load_cases(folder: Path) -> list[PhenopacketCase]:
    return list(iter_phenopackets(folder))


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
    data = build_dataset(cases, kb, maps, n_controls, seed)
    report = evaluate(data, prevalence, budget, seed=seed)
    version = datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    model = fit_risk_model(data.features, data.labels, prevalence, version, seed)
    model.budget_curve = budget_curve(report.oof_risk, report.labels, prevalence)
    t, _, _ = flag_rate_threshold(
        report.oof_risk[report.labels == 1], report.oof_risk[report.labels == 0], prevalence, budget
    )
    model.metrics = report.summary
    model.trained_on = {
        "phenopackets": folder.name,
        "n_cases": report.summary["n_cases"],
        "n_controls": report.summary["n_controls"],
        "seed": seed,
        "threshold_at_budget": t,
    }
    return model, report
