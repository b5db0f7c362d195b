"""Training and evaluation children as EMR records.

* Cases: published phenopackets of children under 7, projected into what an EMR would hold: each HPO
  feature becomes the ICD-10 code of its nearest mapped ancestor (most of the time), a SNOMED code
  (sometimes) or nothing (EMRs miss findings); growth findings become measurements with the right
  z-scores; lab findings become out-of-range lab values; dates follow the feature's onset when known.
* Controls: ordinary paediatric histories (infections, fever, eczema, routine growth checks) with
  hard negatives: prematurity, recurrent infections, asthma, isolated speech delay, febrile seizures,
  single minor anomalies, constitutionally small children.

A :class:`Projection` says how the cases reach the record (ICD-10, SNOMED CT or HPO codes, or the
mixed coding above; which share of the features is kept) and which controls stand beside them
(ordinary children, 20% with a hard negative, or every child with one); the evaluation reports each.
Controls are coded the same way as the cases of a projection, so the coding never tells them apart.
Dates are counted back from a screening date (``as_of``, today for ``simulate``): children are always
under 7 on that date. Ids are valid FHIR ids. Everything is seeded, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal

import numpy as np

from datasets.emr_records import ChildRecord, CodedFact, Measurement
from datasets.fhir_emr import fhir_id
from datasets.phenopackets import PhenopacketCase, PhenotypicFeature
from screening.findings import MAX_AGE_DAYS, CodeMaps
from screening.growth import (
    DECREASED_WEIGHT,
    FAILURE_TO_THRIVE,
    INCREASED_WEIGHT,
    MACROCEPHALY,
    MICROCEPHALY,
    SHORT_STATURE,
    TALL_STATURE,
)
from screening.knowledge import KnowledgeBase
from screening.ontology import Ontology

__all__ = [
    "CaseProjector",
    "Projection",
    "PROJECTIONS",
    "simulate_controls",
    "simulate_control",
    "recode",
    "add_everyday",
    "EVERYDAY_SNOMED",
    "annotation_case",
    "RECORD_PROBABILITY",
    "DEFAULT_AS_OF",
]

RECORD_PROBABILITY = 0.7  # a feature of the published case reaches the EMR as a code
SNOMED_PROBABILITY = 0.3  # otherwise, it is coded in SNOMED CT when a xref exists
MAX_HOPS = 3  # an ICD-10 code of an ancestor further up says too little about the feature
VISITS_MONTHS = (0, 1, 2, 4, 6, 9, 12, 18, 24, 36, 48, 60, 72, 84)
# The screening date of the evaluation (fixed, so figures reproduce); ``simulate`` uses today.
DEFAULT_AS_OF = date(2026, 1, 1)
ORDINARY_HARD_FRACTION = 0.2  # share of ordinary controls with at least one hard negative

Coding = Literal["icd10", "snomed", "hpo", "mixed"]


@dataclass(frozen=True)
class Projection:
    """How published cases reach an EMR record, and which control children stand beside them."""

    name: str
    coding: Coding
    keep: float  # share of the case's features that reach the record
    hard_fraction: float = ORDINARY_HARD_FRACTION  # controls with at least one hard negative
    # everyday episodes in SNOMED CT (EVERYDAY_SNOMED) added to every child, case and control: another site's
    # coding of ordinary childhood, beyond the simulator's own illnesses
    everyday: int = 0


PROJECTIONS = (
    Projection("icd10-70", "icd10", 0.7),
    Projection("snomed-60", "snomed", 0.6),
    Projection("hpo-60", "hpo", 0.6),
    Projection("hpo-30", "hpo", 0.3),
    Projection("hpo-90", "hpo", 0.9),
    Projection("mixed-70-hard-negatives", "mixed", 0.7, hard_fraction=1.0),
    Projection("snomed-60-everyday", "snomed", 0.6, everyday=3),
)

# Everyday episodes of children under 7 as SNOMED CT codes a primary-care record holds (each maps to an HPO term
# through hp.obo's xrefs): infections, atopy, skin, symptoms, and hard negatives. The simulator's own ordinary
# illnesses (``_COMMON``) are ICD-10 codes of the few the commonplace list was first written from.
EVERYDAY_SNOMED = {
    "3110003": "acute otitis media", "65363002": "otitis media", "24079001": "atopic dermatitis",
    "50563003": "seborrheic dermatitis", "271807003": "rash", "418290006": "itching", "30746006": "lymphadenopathy",
    "128045006": "cellulitis", "41497008": "febrile convulsion", "18165001": "jaundice", "84229001": "fatigue",
    "79890006": "loss of appetite", "14760008": "constipation", "386661006": "fever", "4120002": "bronchiolitis",
    "9826008": "conjunctivitis", "61582004": "allergic rhinitis", "195967001": "asthma", "233604007": "pneumonia",
    "87522002": "iron deficiency anaemia", "422400008": "vomiting", "62315008": "diarrhoea", "49727002": "cough",
    "21522001": "abdominal pain", "25064002": "headache", "249366005": "epistaxis", "126485001": "urticaria",
    "235595009": "gastro-oesophageal reflux", "56018004": "wheezing", "10509002": "acute bronchitis",
}


def add_everyday(record: ChildRecord, rng: random.Random, n: int, as_of: date) -> ChildRecord:
    """The record with ``n`` distinct everyday SNOMED CT episodes at random ages up to ``as_of`` (a copy)."""
    span = max(1, (as_of - record.birth_date).days)
    episodes = [
        CodedFact("condition", "snomed", code, record.birth_date + timedelta(days=rng.randrange(span)))
        for code in rng.sample(sorted(EVERYDAY_SNOMED), n)
    ]
    return replace(record, facts=[*record.facts, *episodes])

_GROWTH_TERMS = {
    SHORT_STATURE: ("lhfa", -2.8),
    TALL_STATURE: ("lhfa", 2.6),
    MICROCEPHALY: ("hcfa", -2.9),
    MACROCEPHALY: ("hcfa", 2.7),
    DECREASED_WEIGHT: ("wfa", -2.6),
    FAILURE_TO_THRIVE: ("wfa", -2.4),
    INCREASED_WEIGHT: ("wfa", 2.5),
}
_GROWTH_LOINC = {"lhfa": ("8302-2", "cm"), "wfa": ("29463-7", "kg"), "hcfa": ("9843-4", "cm")}

# (probability, ICD-10 codes) of ordinary childhood episodes.
_COMMON = [
    (0.85, ["J06.9"]),
    (0.45, ["H66.9"]),
    (0.30, ["J21.9"]),
    (0.08, ["J18.9"]),
    (0.35, ["A09"]),
    (0.50, ["R50.9"]),
    (0.15, ["L20.9"]),
    (0.20, ["R05"]),
    (0.10, ["K59.0"]),
    (0.08, ["K21.9"]),
    (0.10, ["P59.9"]),
    (0.06, ["R01.1"]),
    (0.05, ["D18.0"]),
    (0.06, ["D50.9"]),
    (0.05, ["H52.0"]),
    (0.04, ["E66.9"]),
    (0.05, ["R11"]),
    (0.03, ["L50.9"]),
    (0.04, ["J30.4"]),
    (0.03, ["M21.4"]),
    (0.03, ["J35.2"]),
]
# (probability, codes) of hard negatives: look like something, mostly are not.
_HARD = [
    (0.08, ["P07.3", "P22.0", "P59.9"]),  # prematurity with its neonatal course
    (0.08, ["J45.9", "R06.2"]),  # asthma
    (0.06, ["F80.1"]),  # isolated speech delay
    (0.03, ["R56.0"]),  # febrile seizure
    (0.02, ["F84.0"]),  # autism
    (0.03, ["F90.0"]),  # ADHD
    (0.03, ["H50.9"]),  # strabismus
    (0.05, ["H66.9", "H66.9", "J18.9"]),  # recurrent infections
    (0.01, ["G40.9"]),  # epilepsy
    (0.02, ["P05.1"]),  # small for gestational age
    (0.01, ["F82"]),  # motor delay
    (0.01, ["R62.0"]),  # late milestones
]
_MINOR_ANOMALIES = ["Q17.0", "Q18.1", "Q38.1", "Q53.9", "Q66.0", "Q65.8", "Q69.9", "Q21.1", "Q25.0", "Q21.0", "Q54.9", "Q62.0"]


def _growth_value(maps: CodeMaps, indicator: str, sex: str, age_days: int, z: float) -> float | None:
    curve = maps.growth.curves.get((indicator, sex))
    if curve is None:
        return None
    ages, ls, ms, ss = curve
    if age_days < ages[0] or age_days > ages[-1]:
        return None
    l_, m_, s_ = (float(np.interp(age_days, ages, col)) for col in (ls, ms, ss))
    if abs(l_) < 1e-9:
        return m_ * math.exp(s_ * z)
    return m_ * (1 + l_ * s_ * z) ** (1 / l_)


def _routine_growth(
    maps: CodeMaps, rng: random.Random, sex: str, birth: date, age_days: int, z_of: dict[str, float],
    shifts: dict[str, tuple[int, float]],
) -> list[Measurement]:
    out = []
    for months in VISITS_MONTHS:
        when = int(months * 30.4375) + rng.randint(0, 10)
        if when > age_days or rng.random() > 0.65:
            continue
        for indicator, (loinc, unit) in _GROWTH_LOINC.items():
            if indicator == "hcfa" and months > 36:
                continue  # head circumference is not measured routinely after 3 years
            z = z_of[indicator] + rng.gauss(0, 0.25)
            start, target = shifts.get(indicator, (10**6, 0.0))
            if when >= start:
                z = target + rng.gauss(0, 0.2)
            value = _growth_value(maps, indicator, sex, when, z)
            if value is not None:
                out.append(Measurement(loinc, round(value, 1 if unit == "cm" else 2), unit, birth + timedelta(days=when)))
    return out


def simulate_control(
    maps: CodeMaps,
    rng: random.Random,
    index: int,
    as_of: date = DEFAULT_AS_OF,
    hard_fraction: float | None = None,
) -> tuple[ChildRecord, date]:
    """One ordinary child under 7 on ``as_of``; returns the record and the screening date.

    ``hard_fraction`` None draws each hard negative with its own probability (about 40% of children
    have one); a number gives that share of children at least one, the rest none.
    """
    sex = rng.choice("MF")
    age_days = rng.randint(120, MAX_AGE_DAYS - 1)
    birth = as_of - timedelta(days=age_days)
    record = ChildRecord(f"control-{index}", birth, sex)  # type: ignore[arg-type]

    def day() -> date:
        return birth + timedelta(days=rng.randint(0, age_days))

    for probability, codes in _COMMON:
        if rng.random() < probability:
            for code in codes:
                record.facts.append(CodedFact("condition", "icd10", code, day()))
    hard = [codes for probability, codes in _HARD if rng.random() < probability]
    if hard_fraction is not None:
        if rng.random() >= hard_fraction:
            hard = []
        elif not hard:
            hard = [rng.choices([c for _, c in _HARD], weights=[p for p, _ in _HARD])[0]]
    for codes in hard:
        when = day()
        for code in codes:
            record.facts.append(CodedFact("condition", "icd10", code, when))
    if rng.random() < 0.06:
        record.facts.append(CodedFact("condition", "icd10", rng.choice(_MINOR_ANOMALIES), birth + timedelta(days=rng.randint(0, 60))))
    base = rng.gauss(0, 1)
    z_of = {k: 0.7 * base + 0.7 * rng.gauss(0, 1) for k in _GROWTH_LOINC}
    record.measurements = _routine_growth(maps, rng, sex, birth, age_days, z_of, {})
    return record, as_of


def simulate_controls(
    maps: CodeMaps, n: int, seed: int, as_of: date = DEFAULT_AS_OF, hard_fraction: float | None = None
) -> Iterator[tuple[ChildRecord, date]]:
    rng = random.Random(seed)
    for index in range(n):
        yield simulate_control(maps, rng, index, as_of, hard_fraction)


def recode(record: ChildRecord, maps: CodeMaps, coding: Coding) -> ChildRecord:
    """The record with its ICD-10 conditions coded as ``coding`` would code them (the HPO terms they
    map to, or those terms' SNOMED CT xrefs); codes with no equivalent keep their ICD-10 code."""
    if coding in ("icd10", "mixed"):
        return record
    facts: list[CodedFact] = []
    for fact in record.facts:
        terms = maps.icd10.lookup(fact.code) if fact.system == "icd10" and fact.kind == "condition" else []
        if not terms:
            facts.append(fact)
            continue
        for term in terms:
            if coding == "hpo":
                facts.append(CodedFact(fact.kind, "hpo", term, fact.date, fact.refuted))
            else:
                snomed = maps.ontology.terms[term].snomed if term in maps.ontology.terms else []
                facts.append(CodedFact(fact.kind, "snomed", snomed[0], fact.date, fact.refuted) if snomed else fact)
    return ChildRecord(record.patient_id, record.birth_date, record.sex, facts, list(record.measurements), record.source)


def _growth_of(ontology: Ontology, term: str) -> tuple[str, float] | None:
    """The indicator and z of the most specific growth term at or above ``term``. "Failure to thrive" lies
    below "Decreased body weight": taking the first of an ancestor set gave either, by the process's string
    hashing, and ``screening evaluate`` differed between runs in the fourth decimal."""
    found = [a for a in ontology.ancestors(term) if a in _GROWTH_TERMS]
    return _GROWTH_TERMS[max(found, key=lambda a: (len(ontology.ancestors(a)), a))] if found else None


class CaseProjector:
    """Projects phenopackets into EMR records; the reverse code indices are built once."""

    def __init__(self, maps: CodeMaps) -> None:
        self.maps = maps
        self.icd_by_hpo: dict[str, list[str]] = {}
        for code, hpo, source in maps.icd10.rows:
            codes = self.icd_by_hpo.setdefault(hpo, [])
            # reviewed rows first: they are the codes clinicians actually use
            codes.insert(0, code) if source == "reviewed" else codes.append(code)
        self.snomed_by_hpo = {t.id: t.snomed[0] for t in maps.ontology.terms.values() if t.snomed}
        self.lab_by_hpo: dict[str, tuple[str, float]] = {}
        for rule in maps.loinc.values():
            if rule.low_hpo and rule.low_below is not None:
                self.lab_by_hpo.setdefault(rule.low_hpo, (rule.loinc, rule.low_below * 0.7))
            if rule.high_hpo and rule.high_above is not None:
                self.lab_by_hpo.setdefault(rule.high_hpo, (rule.loinc, rule.high_above * 1.8))

    def _nearest(self, hpo: str, table: dict[str, object]) -> str | None:
        """The closest term at or above ``hpo`` (within MAX_HOPS is-a steps) that ``table`` knows."""
        ontology = self.maps.ontology
        queue = deque([(hpo, 0)])
        seen = {hpo}
        while queue:
            term, hops = queue.popleft()
            if term in table:
                return term
            if hops == MAX_HOPS or term not in ontology.terms:
                continue
            for parent in ontology.terms[term].parents:
                if parent not in seen:
                    seen.add(parent)
                    queue.append((parent, hops + 1))
        return None

    def project(
        self,
        case: PhenopacketCase,
        rng: random.Random,
        projection: Projection | None = None,
        as_of: date = DEFAULT_AS_OF,
    ) -> tuple[ChildRecord, date] | None:
        """The case as an EMR record and its screening date, or None without an age under 7."""
        if case.age_days is None or case.age_days >= MAX_AGE_DAYS:
            return None
        coding: Coding = projection.coding if projection else "mixed"
        keep = projection.keep if projection else RECORD_PROBABILITY
        ontology = self.maps.ontology
        age_days = max(case.age_days, 30)
        sex = case.sex if case.sex in ("M", "F") else rng.choice("MF")
        birth = as_of - timedelta(days=age_days)
        record = ChildRecord(fhir_id(f"case-{case.id}"), birth, sex)  # type: ignore[arg-type]
        shifts: dict[str, tuple[int, float]] = {}
        for feature in case.features:
            term = ontology.primary(feature.hpo)
            if term is None:
                continue
            onset = feature.onset_days if feature.onset_days is not None and feature.onset_days <= age_days else None
            when_days = onset if onset is not None else rng.randint(0, age_days)
            when = birth + timedelta(days=min(when_days + rng.randint(0, 90), age_days))
            if coding == "hpo":
                # Coded as the HPO term itself, as a system that records HPO would.
                if rng.random() < keep and (not feature.excluded or rng.random() < 0.15):
                    record.facts.append(CodedFact("condition", "hpo", term, when, feature.excluded))
                continue
            growth = _growth_of(ontology, term)
            if growth is not None and not feature.excluded:
                if projection is not None and rng.random() >= keep:
                    continue
                indicator, z = growth
                if indicator not in shifts or when_days < shifts[indicator][0]:
                    shifts[indicator] = (min(when_days, age_days - 1), z)
                # the visit at which the finding was noticed
                measured = min(when_days + rng.randint(0, 60), age_days)
                value = _growth_value(self.maps, indicator, sex, measured, z + rng.gauss(0, 0.2))
                if value is not None:
                    loinc, unit = _GROWTH_LOINC[indicator]
                    record.measurements.append(Measurement(loinc, round(value, 1), unit, birth + timedelta(days=measured)))
                continue
            if rng.random() > keep or (feature.excluded and rng.random() > 0.15):
                continue
            lab = self.lab_by_hpo.get(term)
            if lab is not None and not feature.excluded:
                record.measurements.append(Measurement(lab[0], lab[1], "", when))
                continue
            if coding == "snomed":
                snomed_term = self._nearest(term, self.snomed_by_hpo)  # type: ignore[arg-type]
                if snomed_term is not None:
                    record.facts.append(CodedFact("condition", "snomed", self.snomed_by_hpo[snomed_term], when, feature.excluded))
                continue
            nearest = self._nearest(term, self.icd_by_hpo)  # type: ignore[arg-type]
            if nearest is not None:
                record.facts.append(CodedFact("condition", "icd10", self.icd_by_hpo[nearest][0], when, feature.excluded))
            elif coding == "mixed" and rng.random() < SNOMED_PROBABILITY:
                snomed_term = self._nearest(term, self.snomed_by_hpo)  # type: ignore[arg-type]
                if snomed_term is not None:
                    record.facts.append(
                        CodedFact("condition", "snomed", self.snomed_by_hpo[snomed_term], when, feature.excluded)
                    )
        # Sick children have ordinary childhoods too.
        for probability, codes in _COMMON:
            if rng.random() < probability:
                for code in codes:
                    record.facts.append(CodedFact("condition", "icd10", code, birth + timedelta(days=rng.randint(0, age_days))))
        base = rng.gauss(0, 1)
        z_of = {k: 0.7 * base + 0.7 * rng.gauss(0, 1) for k in _GROWTH_LOINC}
        record.measurements.extend(_routine_growth(self.maps, rng, sex, birth, age_days, z_of, shifts))
        coded = recode(record, self.maps, coding)
        if projection is not None and projection.everyday:
            coded = add_everyday(coded, rng, projection.everyday, as_of)
        return coded, as_of


def annotation_case(kb: KnowledgeBase, rng: random.Random, index: int, max_age_days: int = MAX_AGE_DAYS) -> PhenopacketCase:
    """A case drawn from the annotations of a disease that starts in childhood (for ``simulate`` without
    phenopackets): each annotated feature present with its annotated frequency, the age under 7."""
    assert kb.fit is not None
    while True:
        disease = rng.randrange(kb.n_diseases)
        onset = int(kb.fit.earliest_onset_days[disease])
        if 0 <= onset < 2 * 365:
            break
    column = kb.present.getcol(disease)
    rows = column.nonzero()[0]
    # present log-LR > 0 marks the annotated terms and those above them; keep the most specific ones.
    annotated = [kb.term_ids[r] for r in rows if column[r, 0] > 2.0]
    features = tuple(
        PhenotypicFeature(term, False, None) for term in annotated if rng.random() < 0.5
    ) or tuple(PhenotypicFeature(term, False, None) for term in annotated[:3])
    sex = rng.choice("MF") if kb.fit.sex[disease] == "" else str(kb.fit.sex[disease])
    return PhenopacketCase(
        id=f"sim-{index}",
        sex=sex,
        age_days=rng.randint(max(onset, 60), max_age_days - 1),
        features=features,
        diseases=(kb.disease_ids[disease],),
        path="",
    )
