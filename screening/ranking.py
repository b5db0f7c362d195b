"""Candidate-disease ranking measured on the published HPO terms of phenopacket cases (no EMR
projection), grouped by gene cohort so that large cohorts do not speak for the small ones.

Rankers, each measured and reported:

* ``likelihood_ratio``: the LIRICAL-style score of ``screening/knowledge.py``;
* ``likelihood_ratio_fit``: the same, with the diseases that cannot fit the child (the other sex's,
  adult onset only) left out and late-onset ones down-weighted (``screening/disease_fit.py``);
* ``shared_information_fit``: simGIC, the information shared with the disease over the information of
  the union of both closures, with the same fit;
* ``combined_fit``: the likelihood ratio plus ``COMBINED_WEIGHT`` x the log of simGIC, with the fit.

The service ranks with :data:`SERVED_RANKER`; the weight and the choice were set once on the development
half of phenopacket-store, not tuned further.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from datasets.phenopackets import PhenopacketCase
from screening.findings import MAX_AGE_DAYS
from screening.knowledge import KnowledgeBase

__all__ = ["RANKERS", "SERVED_RANKER", "rank_scores", "ranking_report", "COMBINED_WEIGHT"]

RANKERS = ("likelihood_ratio", "likelihood_ratio_fit", "shared_information_fit", "combined_fit")
SERVED_RANKER = "combined_fit"  # the best of the four on the published cases (README, ranking)
COMBINED_WEIGHT = 5.0


def rank_scores(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None, ranker: str
) -> np.ndarray:
    """Per-disease ranking scores of one child under ``ranker`` (higher is better)."""
    if ranker not in RANKERS:
        raise ValueError(f"unknown ranker {ranker!r}; one of {RANKERS}")
    fit = kb.fit.adjustment(sex, age_days) if kb.fit is not None and ranker.endswith("_fit") else 0.0
    if ranker.startswith("likelihood_ratio"):
        return kb.scores(observed, excluded) + fit
    info = kb.information
    assert info is not None
    closure = info.closure_of(observed)
    shared = info.per_disease(closure)
    union = info.total(closure) + info.disease_total - shared
    sim = shared / np.maximum(union, 1e-9)
    if ranker == "shared_information_fit":
        return sim + fit
    return kb.scores(observed, excluded) + COMBINED_WEIGHT * np.log(np.maximum(sim, 1e-6)) + fit


def ranking_report(cases: list[PhenopacketCase], kb: KnowledgeBase, children_only: bool = True) -> dict[str, Any]:
    """Top-1/top-10 of each ranker on the published terms, per case and averaged over gene cohorts."""
    # Evaluation only: scikit-learn (behind screening.metrics) stays out of the serving process.
    from screening.metrics import expected_rank
    from screening.train_screener import cohort_of  # the cohort is the folder; one definition

    ranks: dict[str, list[float]] = {r: [] for r in RANKERS}
    cohorts: list[str] = []
    unannotated = 0
    for case in cases:
        if children_only and (case.age_days is None or case.age_days >= MAX_AGE_DAYS):
            continue
        observed = kb.indices({f.hpo for f in case.features if not f.excluded})
        if not observed:
            continue
        excluded = kb.indices({f.hpo for f in case.features if f.excluded})
        index = next((kb.disease_index[d] for d in case.diseases if d in kb.disease_index), None)
        unannotated += index is None
        cohorts.append(cohort_of(case))
        for ranker in RANKERS:
            if index is None:
                ranks[ranker].append(float("inf"))  # counted, as a miss: the disease is not in the annotations
                continue
            ranks[ranker].append(expected_rank(rank_scores(kb, observed, excluded, case.sex, case.age_days, ranker), index))
    out: dict[str, Any] = {
        "cases": len(cohorts),
        "cohorts": len(set(cohorts)),
        "cases_with_disease_not_in_annotations": unannotated,
        "served_ranker": SERVED_RANKER,
    }
    for ranker, values in ranks.items():
        r = np.array(values)
        by_cohort: dict[str, list[float]] = defaultdict(list)
        for value, cohort in zip(r, cohorts, strict=True):
            by_cohort[cohort].append(value)
        out[ranker] = {
            "top1": round(float(np.mean(r <= 1)), 4) if len(r) else None,
            "top10": round(float(np.mean(r <= 10)), 4) if len(r) else None,
            "top1_mean_over_cohorts": round(float(np.mean([np.mean(np.array(v) <= 1) for v in by_cohort.values()])), 4)
            if by_cohort
            else None,
            "top10_mean_over_cohorts": round(float(np.mean([np.mean(np.array(v) <= 10) for v in by_cohort.values()])), 4)
            if by_cohort
            else None,
        }
    return out
