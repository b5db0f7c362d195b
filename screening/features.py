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


def score_child(
    child: ChildFindings, kb: KnowledgeBase, keep_vectors: bool = False, baselines: bool = False
) -> ChildScores:
    """Features of one child; ``baselines`` adds the unweighted feature count (evaluation only)."""
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
        touched = delta[delta != 0]
        positive = touched[touched > 0]
        # Top ten among the touched diseases only: the untouched ones (delta 0) are long runs of ties,
        # where introselect is slow.
        if len(positive) > 10:
            top = np.partition(positive, len(positive) - 10)[-10:]
        else:
            top = np.concatenate([np.zeros(10 - len(positive)), positive])
        features[2] = constant + float(top.max())
        mean_lr = (float(np.exp(touched).sum()) + (kb.n_diseases - len(touched))) / kb.n_diseases
        features[3] = constant + float(np.log(mean_lr))
        features[4] = constant + float(top.mean())
        features[5] = kb.best_match_size(observed, int(np.argmax(delta)))
        if keep_vectors or baselines:
            counts = kb.feature_counts(observed)
            feature_count_max = float(counts.max())
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
