"""Per-child features for the risk model, and the two baselines, from findings and knowledge scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from screening.findings import ChildFindings
from screening.knowledge import EPSILON, DiseaseMatch, KnowledgeBase

__all__ = ["FEATURE_NAMES", "ChildScores", "score_child"]

FEATURE_NAMES = (
    "log1p_findings",
    "organ_systems",
    "kb_max",
    "kb_logmeanexp",
    "kb_top10_mean",
    "matched_in_top",
    "lhfa_z_min",
    "hcfa_z_min",
    "wfa_z_min",
    "congenital_codes",
    "neurodevelopmental",
    "information_content",
)
NEURODEVELOPMENTAL = "HP:0012759"


@dataclass
class ChildScores:
    features: np.ndarray
    organ_systems: int  # baseline 1
    feature_count_max: float  # baseline 2: most findings any one disease explains
    kb_scores: np.ndarray | None  # per-disease log LR (None when no findings); dropped after use
    counts: np.ndarray | None  # per-disease matched finding counts (baseline 2's ranking)
    observed: list[int]

    def top_matches(self, kb: KnowledgeBase, k: int = 5) -> list[DiseaseMatch]:
        if self.kb_scores is None:
            return []
        return kb.top_matches(self.observed, self.kb_scores, k)


def score_child(child: ChildFindings, kb: KnowledgeBase, keep_vectors: bool = False) -> ChildScores:
    present = child.present
    observed = kb.indices(present)
    excluded = kb.indices(child.absent)
    systems = set()
    for term in present:
        primary = kb.ontology.primary(term)
        if primary:
            systems |= kb.ontology.systems_of(primary)
    features = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    features[0] = np.log1p(len(observed))
    features[1] = len(systems)
    scores = counts = None
    feature_count_max = 0.0
    if observed:
        constant, delta = kb.deltas(observed, excluded)
        scores = constant + delta
        positive = delta[delta > 0]
        # Top ten without partitioning 12,633 values full of ties (slow): untouched diseases have delta 0.
        top = np.sort(positive)[-10:] if len(positive) else np.zeros(0)
        top = np.concatenate([np.zeros(10 - len(top)), top]) if len(top) < 10 else top
        features[2] = constant + float(top[-1])
        features[3] = constant + float(np.log(np.mean(np.exp(delta))))
        features[4] = constant + float(top.mean())
        best = int(np.argmax(delta))
        features[5] = len(kb.matched_terms(observed, best))
        if keep_vectors:
            counts = kb.feature_counts(observed)
            feature_count_max = float(counts.max())
        else:
            feature_count_max = float(kb.feature_counts(observed).max())
        # -log P(t) summed: rare, specific findings carry more information than common ones.
        features[11] = float(np.sum(kb.present_default[observed]) - len(observed) * np.log(EPSILON))
    features[6] = max(child.growth_z.get("lhfa", 0.0), -6.0)
    features[7] = max(child.growth_z.get("hcfa", 0.0), -6.0)
    features[8] = max(child.growth_z.get("wfa", 0.0), -6.0)
    features[9] = min(child.congenital_codes, 5)
    features[10] = float(any(NEURODEVELOPMENTAL in kb.ontology.ancestors(t) for t in present if t in kb.ontology.terms))
    return ChildScores(
        features=features,
        organ_systems=len(systems),
        feature_count_max=feature_count_max,
        kb_scores=scores,
        counts=counts if keep_vectors else None,
        observed=observed,
    )
