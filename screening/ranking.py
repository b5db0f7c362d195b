"""Candidate-disease ranking measured on the published HPO terms of phenopacket cases (no EMR
projection), grouped by gene cohort so that large cohorts do not speak for the small ones.

Rankers, each measured and reported (``medscreen screening evaluate``, README):

* ``likelihood_ratio``: the LIRICAL-style score of ``screening/knowledge.py``;
* ``likelihood_ratio_fit``: the same, with the diseases that cannot fit the child (the other sex's,
  adult onset only) left out and late-onset ones down-weighted (``screening/disease_fit.py``);
* ``shared_information_fit``: simGIC, the information shared with the disease over the information of
  the union of both closures, with the same fit;
* ``combined_fit``: the likelihood ratio plus ``COMBINED_WEIGHT`` x the log of simGIC, with the fit;
* ``best_match_fit``: the best-match average of Resnik similarity (``SharedInformation.best_match``:
  each finding scored by the most informative term it shares with the disease), with the fit;
* ``best_match_combined_fit``: best match + ``BEST_MATCH_SIM_WEIGHT`` x log simGIC +
  ``BEST_MATCH_LR_WEIGHT`` x the likelihood ratio, with the fit;
* ``best_match_combined_fit_once`` (served): the same, each condition listed once: an Orphanet entry with an
  OMIM twin (the same genes, ``screening/disease_genes.py``) goes to the end, so its OMIM twin and other
  diseases take its place;
* ``cooccurrence_fit``: PhenoDP's co-occurrence measure, the phi coefficient of the two closures
  (``SharedInformation.cooccurrence``), with the fit;
* ``best_match_combined_cooccurrence_fit``: ``best_match_combined_fit`` + ``COOCCURRENCE_WEIGHT`` x phi.

Every ranker above is measured on all of a case's findings. The served candidates are ranked on the findings
that say more than ordinary childhood illness (:func:`ranking_findings`): in an EMR record, a child's fever,
otitis media and eczema are ordinary episodes, and as full matches they brought febrile and infectious rare
diseases (tularemia, Sweet syndrome) into the candidates of flagged children. The commonplace findings count
:data:`COMMONPLACE_WEIGHT` each in the best match (a tenth of a finding: they break near-ties, as a recurrent
pneumonia or a premature birth in a syndrome's published features does) and are never listed as matched; the
shared-information term reads only the findings beyond them. ``ranking_report`` measures the served ranker on
the published terms (``served`` beside ``best_match_combined_fit_once``, and each weight of
:data:`COMMONPLACE_GRID`), and ``screening.train_screener`` on each EMR projection of the cases
(:func:`candidate_rank`), beside every finding at full weight.

Refuted (excluded) findings leave the served candidates as they are. Counted against the diseases that show
them, they cost the published cases most of the ranking: of the 1,207 children, 1,084 list excluded features,
and served top-1/top-10 fell from 0.398/0.533 to 0.350/0.490 with 0.05 x their likelihood ratio, to 0.361/0.503
with a penalty of 0.1 for each refuted finding the disease shows in 70% of its patients or more. Authors list
as absent the features of the disease they diagnosed, and a record's "refuted" is likewise a suspicion ruled
out: it says which diseases someone had in mind, not which the child lacks.

The served ranker is also measured at the gene level (``gene_level``): the rank of the case's gene (its
phenopacket-store cohort) among the genes of the ranked diseases (``screening/disease_genes.py``), on every
case, on the annotated ones, and on those whose disease is missing from the annotations but whose gene has
other annotated diseases: what a profile built from a gene's other diseases could at most give them.

The weights were chosen on the development half of phenopacket-store from a small grid
(:data:`WEIGHT_GRID`); ``ranking_report`` also repeats that choice inside a cross-validation over gene
cohorts (chosen on four fifths of the cohorts, measured on the fifth), so the optimism of choosing on
the same cases is reported, not hidden.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from datasets.phenopackets import PhenopacketCase
from screening.disease_fit import EXCLUDED
from screening.findings import MAX_AGE_DAYS
from screening.knowledge import KnowledgeBase

__all__ = [
    "RANKERS", "SERVED_RANKER", "rank_scores", "ranking_findings", "served_scores", "candidate_rank", "ranking_report",
    "COMBINED_WEIGHT", "WEIGHT_GRID", "COMMONPLACE_WEIGHT", "COMMONPLACE_GRID",
]

RANKERS = (
    "likelihood_ratio",
    "likelihood_ratio_fit",
    "shared_information_fit",
    "combined_fit",
    "best_match_fit",
    "best_match_combined_fit",
    "best_match_combined_fit_once",
    "cooccurrence_fit",
    "best_match_combined_cooccurrence_fit",
)
SERVED_RANKER = "best_match_combined_fit_once"  # the best on the published cases (README, ranking)
COMBINED_WEIGHT = 5.0
BEST_MATCH_SIM_WEIGHT = 0.25
BEST_MATCH_LR_WEIGHT = 0.0  # the cross-validated choice: the likelihood ratio adds nothing beside the best match
# phi lies in [-1, 1] where the best match is a few nats: 0.25 lets it break near-ties (weights 0.1-2 measured, README).
COOCCURRENCE_WEIGHT = 0.25
# (log simGIC weight, likelihood-ratio weight) beside the best match, searched once and in the cross-validation.
WEIGHT_GRID = tuple((s, lr) for s in (0.0, 0.25, 0.5, 1.0) for lr in (0.0, 0.03, 0.05, 0.1))
# A commonplace finding's weight in the served best match, chosen from COMMONPLACE_GRID on the development cases:
# the largest sum of top-1 and top-10 over the published terms and the seven EMR projections among the weights
# that lower no projection's top-10 (README, candidate ranking: 0.2 gave more in sum and cost the projection with
# everyday illnesses 0.017 of its top-10; 1, every finding at full weight, the most on the published terms only).
COMMONPLACE_WEIGHT = 0.1
COMMONPLACE_GRID = (0.0, 0.1, 0.2, 0.35, 1.0)


@dataclass
class _Components:
    """The per-disease scores the rankers are made of, for one child."""

    likelihood_ratio: np.ndarray
    log_sim: np.ndarray
    sim: np.ndarray
    best_match: np.ndarray
    fit: np.ndarray
    cooccurrence: np.ndarray
    twins: np.ndarray


def _components(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None, best_match: bool = True,
    cooccurrence: bool = True, commonplace: Sequence[int] = (),
) -> _Components:
    info = kb.information
    assert info is not None
    closure = info.closure_of(observed)
    shared = info.per_disease(closure)
    union = info.total(closure) + info.disease_total - shared
    sim = shared / np.maximum(union, 1e-9)
    fit = kb.fit.adjustment(sex, age_days) if kb.fit is not None else np.zeros(kb.n_diseases)
    return _Components(
        likelihood_ratio=kb.scores(observed, excluded),
        log_sim=np.log(np.maximum(sim, 1e-6)),
        sim=sim,
        best_match=info.best_match(observed, commonplace, COMMONPLACE_WEIGHT) if best_match else np.zeros(kb.n_diseases),
        fit=fit,
        cooccurrence=info.cooccurrence(closure) if cooccurrence else np.zeros(kb.n_diseases),
        twins=kb.twins,
    )


def _combine(c: _Components, ranker: str) -> np.ndarray:
    if ranker == "likelihood_ratio":
        return c.likelihood_ratio
    if ranker == "likelihood_ratio_fit":
        return c.likelihood_ratio + c.fit
    if ranker == "shared_information_fit":
        return c.sim + c.fit
    if ranker == "combined_fit":
        return c.likelihood_ratio + COMBINED_WEIGHT * c.log_sim + c.fit
    if ranker == "best_match_fit":
        return c.best_match + c.fit
    if ranker == "cooccurrence_fit":
        return c.cooccurrence + c.fit
    if ranker == "best_match_combined_cooccurrence_fit":
        return _weighted(c, BEST_MATCH_SIM_WEIGHT, BEST_MATCH_LR_WEIGHT) + COOCCURRENCE_WEIGHT * c.cooccurrence
    if ranker == "best_match_combined_fit_once":
        return _once(c, _weighted(c, BEST_MATCH_SIM_WEIGHT, BEST_MATCH_LR_WEIGHT))
    return _weighted(c, BEST_MATCH_SIM_WEIGHT, BEST_MATCH_LR_WEIGHT)


def _once(c: _Components, scores: np.ndarray) -> np.ndarray:
    """``scores`` with each condition listed once: Orphanet twins of OMIM entries go to the end."""
    return np.where(c.twins, EXCLUDED, scores)


def _weighted(c: _Components, sim_weight: float, lr_weight: float) -> np.ndarray:
    return c.best_match + sim_weight * c.log_sim + lr_weight * c.likelihood_ratio + c.fit


def rank_scores(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None, ranker: str
) -> np.ndarray:
    """Per-disease ranking scores of one child under ``ranker`` (higher is better)."""
    if ranker not in RANKERS:
        raise ValueError(f"unknown ranker {ranker!r}; one of {RANKERS}")
    return _combine(_components(kb, observed, excluded, sex, age_days, ranker.startswith("best_match"), "cooccurrence" in ranker), ranker)


def ranking_findings(kb: KnowledgeBase, observed: list[int]) -> list[int]:
    """The findings the served candidates are ranked on: those beyond commonplace childhood illness (the
    terms whose informative peak is above 0, as the risk model counts them); all of them when none is."""
    info = kb.information
    if info is None:
        return observed
    informative = [f for f in observed if info.informative_peak[f] > 0.0]
    return informative or observed


def served_scores(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None
) -> tuple[np.ndarray, list[int]]:
    """The served candidates' per-disease scores and the findings beyond commonplace illness they were ranked on
    (the commonplace ones count :data:`COMMONPLACE_WEIGHT` each in the best match)."""
    components, findings = _served_components(kb, observed, excluded, sex, age_days)
    return _combine(components, SERVED_RANKER), findings


def _served_components(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None
) -> tuple[_Components, list[int]]:
    findings = ranking_findings(kb, observed)
    kept = set(findings)
    commonplace = [f for f in observed if f not in kept]
    return _components(kb, findings, excluded, sex, age_days, True, False, commonplace), findings


def candidate_rank(
    kb: KnowledgeBase, observed: list[int], excluded: list[int], sex: str, age_days: int | None, diseases: tuple[str, ...],
    all_findings: bool = False,
) -> float:
    """Expected rank (ties split) of the first of ``diseases`` that is annotated among the served candidates;
    inf when none is annotated or there is no finding. ``all_findings``: commonplace findings ranked too."""
    from screening.metrics import expected_rank  # scikit-learn behind it stays out of the serving process

    index = next((kb.disease_index[d] for d in diseases if d in kb.disease_index), None)
    if index is None or not observed:
        return float("inf")
    if all_findings:
        return expected_rank(rank_scores(kb, observed, excluded, sex, age_days, SERVED_RANKER), index)
    return expected_rank(served_scores(kb, observed, excluded, sex, age_days)[0], index)


def _summary(ranks: np.ndarray, cohorts: list[str], annotated: np.ndarray) -> dict[str, float | None]:
    if not len(ranks):
        return {"top1": None, "top3": None, "top10": None}
    by_cohort: dict[str, list[float]] = defaultdict(list)
    for value, cohort in zip(ranks, cohorts, strict=True):
        by_cohort[cohort].append(value)
    out: dict[str, float | None] = {f"top{k}": round(float(np.mean(ranks <= k)), 4) for k in (1, 3, 10)}
    for k in (1, 3, 10):
        out[f"top{k}_annotated"] = round(float(np.mean(ranks[annotated] <= k)), 4) if annotated.any() else None
    for k in (1, 10):
        out[f"top{k}_mean_over_cohorts"] = round(float(np.mean([np.mean(np.array(v) <= k) for v in by_cohort.values()])), 4)
    return out


def ranking_report(
    cases: list[PhenopacketCase], kb: KnowledgeBase, children_only: bool = True, folds: int = 5, seed: int = 7
) -> dict[str, Any]:
    """Top-1/3/10 of each ranker on the published terms: per case, on the cases whose disease is in the
    annotations, and averaged over gene cohorts; and the weight choice repeated in a cohort cross-validation."""
    # Evaluation only: scikit-learn (behind screening.metrics) stays out of the serving process.
    from screening.disease_genes import read_disease_genes
    from screening.metrics import expected_rank
    from screening.train_screener import cohort_of  # the cohort is the folder; one definition

    disease_genes = read_disease_genes(kb.disease_index)
    known_genes = {g for symbols in disease_genes.values() for g in symbols}
    ranks: dict[str, list[float]] = {r: [] for r in (*RANKERS, "served")}
    commonplace_ranks: dict[float, list[float]] = {w: [] for w in COMMONPLACE_GRID}
    info = kb.information
    assert info is not None
    grid_ranks: list[list[float]] = []
    gene_ranks: list[float] = []
    gene_known: list[bool] = []
    cohorts: list[str] = []
    for case in cases:
        if children_only and (case.age_days is None or case.age_days >= MAX_AGE_DAYS):
            continue
        observed = kb.indices({f.hpo for f in case.features if not f.excluded})
        if not observed:
            continue
        excluded = kb.indices({f.hpo for f in case.features if f.excluded})
        index = next((kb.disease_index[d] for d in case.diseases if d in kb.disease_index), None)
        cohorts.append(cohort_of(case))
        components = _components(kb, observed, excluded, case.sex, case.age_days)
        served, findings = _served_components(kb, observed, excluded, case.sex, case.age_days)
        lesser = [f for f in observed if f not in set(findings)]
        gene_ranks.append(_gene_rank(_combine(served, SERVED_RANKER), disease_genes, cohorts[-1]))
        gene_known.append(cohorts[-1] in known_genes)
        if index is None:  # counted, as a miss: the disease is not in the annotations
            for ranker in ranks:
                ranks[ranker].append(float("inf"))
            for w in COMMONPLACE_GRID:
                commonplace_ranks[w].append(float("inf"))
            grid_ranks.append([float("inf")] * len(WEIGHT_GRID))
            continue
        for ranker in RANKERS:
            ranks[ranker].append(expected_rank(_combine(components, ranker), index))
        ranks["served"].append(expected_rank(_combine(served, SERVED_RANKER), index))
        for w in COMMONPLACE_GRID:
            weighted = replace(served, best_match=info.best_match(findings, lesser, w))
            commonplace_ranks[w].append(expected_rank(_combine(weighted, SERVED_RANKER), index))
        grid_ranks.append([
            expected_rank(_once(served, _weighted(served, s, lr)), index) for s, lr in WEIGHT_GRID
        ])
    annotated = np.array([r != float("inf") for r in ranks[RANKERS[0]]], dtype=bool)
    out: dict[str, Any] = {
        "cases": len(cohorts),
        "cohorts": len(set(cohorts)),
        "cases_with_disease_not_in_annotations": int((~annotated).sum()),
        "served_ranker": SERVED_RANKER,
        "served_findings": "beyond commonplace childhood illness (all when none is)",
    }
    for ranker, values in ranks.items():
        out[ranker] = _summary(np.array(values), cohorts, annotated)
    out["served_commonplace_weight"] = COMMONPLACE_WEIGHT
    out["served_by_commonplace_weight"] = {
        str(w): _summary(np.array(values), cohorts, annotated) for w, values in commonplace_ranks.items()
    }
    out["weight_choice_cross_validated"] = _cross_validated_choice(np.array(grid_ranks), cohorts, annotated, folds, seed)
    genes, known = np.array(gene_ranks), np.array(gene_known, dtype=bool)
    out["gene_level"] = {
        "ranker": SERVED_RANKER,
        **_summary(genes, cohorts, annotated),
        "unannotated_with_gene_known": int((~annotated & known).sum()),
        **{f"top{k}_unannotated_with_gene_known": round(float(np.mean(genes[~annotated & known] <= k)), 4)
           if (~annotated & known).any() else None for k in (1, 3, 10)},
    }
    return out


def _gene_rank(scores: np.ndarray, disease_genes: dict[int, frozenset[str]], gene: str, deepest: int = 50) -> float:
    """Where ``gene`` first appears among the genes of the diseases in ``scores`` order (each gene counted
    once, at its best disease; ties broken by disease order, as a stable sort does): inf beyond ``deepest``."""
    seen: set[str] = set()
    for disease in np.argsort(-scores, kind="stable"):
        for symbol in sorted(disease_genes.get(int(disease), ())):
            if symbol not in seen:
                seen.add(symbol)
                if symbol == gene:
                    return float(len(seen))
        if len(seen) > deepest:
            break
    return float("inf")


def _cross_validated_choice(
    grid: np.ndarray, cohorts: list[str], annotated: np.ndarray, folds: int, seed: int
) -> dict[str, Any]:
    """Each fold of gene cohorts ranked with the grid weights that did best (top-1 + top-10) on the others."""
    if not len(grid):
        return {}
    names = sorted(set(cohorts))
    random.Random(seed).shuffle(names)
    slot = {name: i % folds for i, name in enumerate(names)}
    fold = np.array([slot[c] for c in cohorts])
    chosen = np.zeros(len(grid))
    picks = []
    for k in range(folds):
        train = fold != k
        if not train.any() or not (~train).any():
            continue
        quality = np.mean(grid[train] <= 1, axis=0) + np.mean(grid[train] <= 10, axis=0)
        best = int(np.argmax(quality))
        picks.append(list(WEIGHT_GRID[best]))
        chosen[~train] = grid[~train, best]
    return {"folds": folds, "chosen_weights_per_fold": picks, **_summary(chosen, cohorts, annotated)}
