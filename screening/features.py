"""Per-child features of the risk model, and the baselines, from a child's findings.

Every feature is bounded (a value in [0, 1]: a count or an amount of information divided by its cap)
and never falls when evidence is added: another finding, or a more specific one in place of a general
one, can only keep or raise each of them (``screening/information.py`` says why for the information
features). With non-negative weights in the risk model, the risk is then monotone in the evidence, and
a child with more findings than any training case is not extrapolated anywhere (the caps hold it).
Excluded (refuted) findings never enter the risk, nor the order of the served candidates (``screening/ranking.py``
says why); they are kept, listed and written out.

The count, specificity and information features leave out commonplace childhood findings (fever, otitis
media, eczema: ``screening/information.py``): an ordinary child has several, and counted as evidence they
drowned the few findings of a case with 30% of its features recorded (``medscreen screening evaluate``:
worst projection 0.27 -> 0.50 sensitivity at 1% flags).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from screening.findings import ChildFindings
from screening.information import SPECIFIC_INFORMATION
from screening.knowledge import DiseaseMatch, KnowledgeBase

__all__ = ["FEATURE_NAMES", "FEATURE_CAPS", "ChildScores", "score_child"]

# name -> cap (the feature is min(value, cap) / cap)
FEATURE_CAPS = {
    "informative_findings": 16.0,  # distinct HPO findings that are not commonplace in children
    "specific_findings": 10.0,  # distinct findings of at most ~1 disease in 50, commonplace ones apart
    "information": 60.0,  # nats over the closure of the findings, shared ancestry and commonplace ones apart
    "best_disease_information": 45.0,  # nats shared with the best-matching disease
    # nats with which one disease explains the informative findings one by one (sum of Resnik similarity):
    # about four or five specific findings of one disease
    "best_disease_match": 40.0,
    "organ_systems": 6.0,
    "height_deficit": 3.0,  # SD below -2 of the lowest length/height-for-age z
    "head_deficit": 3.0,
    "weight_deficit": 3.0,
    "congenital_codes": 4.0,  # ICD-10 chapter Q codes
    "neurodevelopmental": 1.0,
}
FEATURE_NAMES = tuple(FEATURE_CAPS)
NEURODEVELOPMENTAL = "HP:0012759"


@dataclass
class ChildScores:
    features: np.ndarray
    organ_systems: int
    finding_count: int  # baseline: distinct HPO findings
    feature_count_max: float  # baseline: most findings any one disease explains (evaluation only)
    kb_scores: np.ndarray | None  # per-disease log LR, computed when asked (candidates, evaluation)
    counts: np.ndarray | None
    observed: list[int]
    excluded: list[int] = field(default_factory=list)
    sex: str = "U"
    age_days: int | None = None
    best_disease: int | None = None  # by shared information

    def top_matches(self, kb: KnowledgeBase, k: int = 5) -> list[DiseaseMatch]:
        """Candidate diseases for this child, ranked by :data:`screening.ranking.SERVED_RANKER` (which
        leaves out diseases of the other sex and down-weights adult and later onset) on the findings beyond
        commonplace childhood illness; each candidate's matched findings are among those."""
        from screening.ranking import served_scores

        if not self.observed:
            return []
        scores, findings = served_scores(kb, self.observed, self.excluded, self.sex, self.age_days)
        return kb.top_matches(findings, scores, k)


def _capped(value: float, name: str) -> float:
    return min(max(value, 0.0), FEATURE_CAPS[name]) / FEATURE_CAPS[name]


def score_child(
    child: ChildFindings,
    kb: KnowledgeBase,
    keep_vectors: bool = False,
    baselines: bool = False,
    best_disease: tuple[int, float] | None = None,
) -> ChildScores:
    """Features of one child; ``keep_vectors`` keeps the per-disease scores, ``baselines`` adds the
    unweighted per-disease feature count (both for evaluation). ``best_disease``: the child's
    ``(index, shared information)`` when a population run computed it for a batch of children
    (``SharedInformation.best_diseases``)."""
    if kb.information is None:
        raise ValueError("the knowledge base was built without information content")
    present = child.present
    observed = kb.indices(present)
    excluded = kb.indices(child.absent)
    info = kb.information
    closure = info.closure_of(observed)
    systems = int(np.count_nonzero(info.organ_system[closure]))
    features = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    best = None
    if observed:
        peak = info.informative_peak[observed]
        features[0] = _capped(float(np.count_nonzero(peak > 0.0)), "informative_findings")
        features[1] = _capped(float(np.count_nonzero(peak >= SPECIFIC_INFORMATION)), "specific_findings")
        features[2] = _capped(info.informative_total(closure), "information")
        if best_disease is None:
            shared = info.per_disease(closure)
            best_disease = (int(np.argmax(shared)), float(shared[int(np.argmax(shared))]))
        best = best_disease[0]
        features[3] = _capped(best_disease[1], "best_disease_information")
        features[4] = _capped(info.best_match_peak(observed), "best_disease_match")
    features[5] = _capped(systems, "organ_systems")
    features[6] = _capped(-2.0 - child.growth_z.get("lhfa", 0.0), "height_deficit")
    features[7] = _capped(-2.0 - child.growth_z.get("hcfa", 0.0), "head_deficit")
    features[8] = _capped(-2.0 - child.growth_z.get("wfa", 0.0), "weight_deficit")
    features[9] = _capped(child.congenital_codes, "congenital_codes")
    neuro = kb.term_index.get(NEURODEVELOPMENTAL, -1)
    features[10] = float(bool(np.any(closure == neuro)))
    scores = counts = None
    feature_count_max = 0.0
    if observed and keep_vectors:
        scores = kb.scores(observed, excluded)
    if observed and (keep_vectors or baselines):
        counts = kb.feature_counts(observed)
        feature_count_max = float(counts.max())
    return ChildScores(
        features=features,
        organ_systems=systems,
        finding_count=len(observed),
        feature_count_max=feature_count_max,
        kb_scores=scores,
        counts=counts if keep_vectors else None,
        observed=observed,
        excluded=excluded,
        sex=child.sex,
        age_days=child.age_days,
        best_disease=best,
    )
