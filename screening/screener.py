"""Screen one child: record -> findings -> knowledge scores -> calibrated risk -> flag with reasons.

:class:`Screener` holds the read-only knowledge (ontology, disease tables, code maps, risk model),
built once per process (about 6 s) and shared by the API, the batch runner and the evaluation.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path

from datasets.emr_records import ChildRecord, DroppedEntry
from screening.best_disease_search import BestDiseaseSearch
from screening.features import ChildScores, score_child
from screening.findings import MAX_AGE_DAYS, ChildFindings, CodeMaps, Finding, Status, extract_findings, load_code_maps
from screening.knowledge import DiseaseMatch, KnowledgeBase, build_knowledge_base
from screening.ontology import Ontology, load_ontology
from screening.risk_model import RiskModel, load_risk_model
from screening.site_calendar import site_today

__all__ = ["Screener", "ScreeningResult", "patient_digest"]

logger = logging.getLogger(__name__)


# Candidate diseases kept with a flag (the page shows the first five, the rest behind a toggle). On the
# projected EMR records of the published cases, the disease is among the first 10 for 0.03-0.05 more of the
# cases than among the first 5 in every projection (hpo-60: 0.403 -> 0.436; README, ranking).
CANDIDATES_KEPT = 10

_FEATURE_WORDS = {
    "informative_findings": "number of findings beyond common childhood illness",
    "specific_findings": "specific findings",
    "information": "information in the findings",
    "best_disease_information": "fit to a known rare disease",
    "best_disease_match": "findings explained by one rare disease",
    "organ_systems": "organ systems involved",
    "height_deficit": "short length/height for age",
    "head_deficit": "small head for age",
    "weight_deficit": "low weight for age",
    "congenital_codes": "congenital anomaly diagnoses",
    "neurodevelopmental": "neurodevelopmental finding",
}


def patient_digest(patient_id: str) -> str:
    """A short stable digest to name a child in logs without the identifier in clear."""
    return hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:12]


@dataclass
class ScreeningResult:
    patient_id: str
    status: Status
    reason: str
    age_days: int
    model_version: str
    risk: float | None = None
    threshold: float | None = None
    flagged: bool = False
    findings: list[Finding] = field(default_factory=list)
    organ_systems: list[str] = field(default_factory=list)
    candidates: list[DiseaseMatch] = field(default_factory=list)
    drivers: list[str] = field(default_factory=list)
    dropped: list[DroppedEntry] = field(default_factory=list)  # entries of the record that could not be read
    screened_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Screener:
    def __init__(
        self,
        ontology: Ontology,
        kb: KnowledgeBase,
        maps: CodeMaps,
        model: RiskModel,
        budget: float,
        max_age_days: int = MAX_AGE_DAYS,
        threshold: float | None = None,
    ) -> None:
        self.ontology = ontology
        self.kb = kb
        self.maps = maps
        self.model = model
        self.budget = budget
        self.max_age_days = max_age_days
        # A site's own threshold (``medscreen screening calibrate``) replaces the one the budget gives on the
        # simulated children the model was trained beside.
        self.threshold = threshold if threshold is not None else model.threshold_for(budget)

    @cached_property
    def best_disease_search(self) -> BestDiseaseSearch | None:
        """How batches of children (population runs) find their best-matching disease: built on first use
        (28 MB, a tenth of a second), so that a process that screens one child at a time never holds it."""
        return BestDiseaseSearch(self.kb.information) if self.kb.information is not None else None

    @classmethod
    def load(
        cls, budget: float, max_age_years: float = 7.0, model_path: Path | None = None, threshold: float | None = None
    ) -> Screener:
        ontology = load_ontology()
        kb = build_knowledge_base(ontology)
        maps = load_code_maps(ontology)
        model = load_risk_model(model_path)
        screener = cls(ontology, kb, maps, model, budget, int(max_age_years * 365.25), threshold)
        logger.info(
            "screener %s loaded, alert budget %.4f, threshold %.6f (%s)", model.version, budget, screener.threshold,
            "the site's own" if threshold is not None else "from the budget",
        )
        return screener

    def scores(self, record: ChildRecord, as_of: date) -> tuple[ScreeningResult, ChildScores | None]:
        result, child = self.findings(record, as_of)
        return result, self.risk(result, child)

    def findings(self, record: ChildRecord, as_of: date) -> tuple[ScreeningResult, ChildFindings]:
        """The first half of :meth:`scores`: the child's findings and status (population runs then
        compute the knowledge part for a batch of children before :meth:`risk`)."""
        return self.started(record, extract_findings(record, self.maps, as_of, self.max_age_days))

    def started(self, record: ChildRecord, child: ChildFindings) -> tuple[ScreeningResult, ChildFindings]:
        """The result of a child whose findings are known (population runs find them for a batch)."""
        result = ScreeningResult(
            record.patient_id, child.status, child.reason, child.age_days, self.model.version, findings=child.findings
        )
        if child.status == "screened" and (record.incomplete or child.unread):
            # Screened on what could be read, and said so: a risk from part of a record is a lower bound.
            result.status = "incomplete"
            result.dropped = [*record.dropped, *child.unread]
            n = len(result.dropped)
            result.reason = f"{n} {'entry' if n == 1 else 'entries'} of the record could not be read"
        return result, child

    def risk(
        self, result: ScreeningResult, child: ChildFindings, best_disease: tuple[int, float] | None = None
    ) -> ChildScores | None:
        """The second half of :meth:`scores`: features and risk of a child who is screened at all."""
        if child.status != "screened":
            return None
        scored = score_child(child, self.kb, best_disease=best_disease)
        self.judge(result, float(self.model.risk(scored.features)[0]))
        return scored

    def judge(self, result: ScreeningResult, risk: float) -> None:
        """Records a screened child's risk, the threshold and whether it flags the child."""
        result.risk = risk
        result.threshold = self.threshold
        result.flagged = result.risk >= self.threshold

    def screen(self, record: ChildRecord, as_of: date | None = None, explain: bool | None = None) -> ScreeningResult:
        """Screen one child as of a date (default the site's today, ``site_today``); flagged children are always
        explained."""
        result, scored = self.scores(record, as_of or site_today())
        if scored is not None and (result.flagged if explain is None else explain):
            self.explain(result, scored)
        return result

    def explain(self, result: ScreeningResult, scored: ChildScores, k: int = CANDIDATES_KEPT) -> None:
        result.candidates = scored.top_matches(self.kb, k)
        systems: set[str] = set()
        for finding in result.findings:
            primary = self.ontology.primary(finding.hpo)
            if primary and not finding.excluded:
                systems |= self.ontology.systems_of(primary)
        result.organ_systems = sorted(self.ontology.name(s) for s in systems)
        contributions = self.model.contributions(scored.features)
        ranked = sorted(contributions.items(), key=lambda kv: -kv[1])
        result.drivers = [f"{_FEATURE_WORDS.get(name, name)} (+{value:.2f})" for name, value in ranked[:4] if value > 0]
