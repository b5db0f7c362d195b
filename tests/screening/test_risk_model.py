"""The risk model cannot extrapolate wrongly: over random children, an added finding or a more specific
one never lowers the risk, the features stay bounded, and the shipped artefact has no negative weight."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from screening.errors import ScreenerArtefactError
from screening.features import FEATURE_NAMES, score_child
from screening.findings import ChildFindings, Finding
from screening.knowledge import KnowledgeBase
from screening.risk_model import SHIPPED_SCREENER, RiskModel, load_risk_model

CHILDREN = 300


def _child(terms: list[str], rng: random.Random) -> ChildFindings:
    child = ChildFindings("c", rng.choice("MF"), rng.randint(30, 2500), "screened")
    child.findings = [Finding(t, None, "hpo") for t in terms]
    child.growth_z = {k: rng.gauss(0, 1.5) for k in ("lhfa", "hcfa", "wfa")}
    child.congenital_codes = rng.randint(0, 3)
    return child


def _risk(model: RiskModel, kb: KnowledgeBase, child: ChildFindings) -> float:
    return float(model.risk(score_child(child, kb).features)[0])


def test_an_added_or_more_specific_finding_never_lowers_the_risk(kb: KnowledgeBase) -> None:
    model = load_risk_model()
    rng = random.Random(13)
    # Terms children are coded with: any phenotype term that has annotations (and its children).
    terms = [t for t in kb.term_ids if kb.information is not None and kb.information.information[kb.term_index[t]] < 9]
    checked_specific = 0
    for _ in range(CHILDREN):
        present = rng.sample(terms, rng.randint(0, 25))
        child = _child(present, rng)
        base = _risk(model, kb, child)
        added = rng.choice(terms)
        more = ChildFindings(child.patient_id, child.sex, child.age_days, "screened", findings=[*child.findings, Finding(added, None, "hpo")],
                             growth_z=child.growth_z, congenital_codes=child.congenital_codes)
        assert _risk(model, kb, more) >= base - 1e-12, (present, added)
        if present:
            general = rng.choice(present)
            below = [c for c in kb.ontology.children.get(general, []) if c not in present]
            if below:
                checked_specific += 1
                specific = [rng.choice(below) if t == general else t for t in present]
                sharper = _child(specific, random.Random(0))
                sharper.sex, sharper.age_days = child.sex, child.age_days
                sharper.growth_z, sharper.congenital_codes = child.growth_z, child.congenital_codes
                assert _risk(model, kb, sharper) >= base - 1e-12, (present, general, specific)
    assert checked_specific > CHILDREN // 3


def test_features_are_bounded_and_many_findings_do_not_mean_no_risk(kb: KnowledgeBase) -> None:
    model = load_risk_model()
    rng = random.Random(5)
    terms = rng.sample([t for t in kb.term_ids if kb.ontology.is_phenotype(t)], 200)
    risks = []
    for n in (0, 5, 23, 37, 200):  # the case: 37 findings scored below 23
        scored = score_child(_child(terms[:n], random.Random(1)), kb)
        assert np.all(scored.features >= 0) and np.all(scored.features <= 1)
        risks.append(float(model.risk(scored.features)[0]))
    assert risks == sorted(risks) and risks[-1] < 1.0


def test_the_shipped_model_is_monotone_and_refuses_a_negative_weight(tmp_path: Path) -> None:
    model = load_risk_model()
    assert model.feature_names == list(FEATURE_NAMES) and min(model.coef) >= 0
    assert 0 < model.prevalence < 0.01  # the risk is stated at a population prevalence
    data = json.loads(SHIPPED_SCREENER.read_text())
    data["coef"][0] = -0.5
    bad = tmp_path / "screener.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ScreenerArtefactError, match="negative weight"):
        load_risk_model(bad)


def test_commonplace_childhood_findings_carry_no_evidence_and_what_lies_below_them_does(kb: KnowledgeBase) -> None:
    """Fever, otitis media, bronchiolitis and eczema are rare among diseases but not among children: they
    counted as four findings (and 18 nats) and drowned a case's few recorded findings."""
    rng = random.Random(2)
    ordinary = _child(["HP:0001945", "HP:0000388", "HP:0011950", "HP:0000964"], rng)
    ordinary.growth_z, ordinary.congenital_codes = {}, 0
    features = dict(zip(FEATURE_NAMES, score_child(ordinary, kb).features, strict=True))
    assert features["informative_findings"] == features["specific_findings"] == features["information"] == 0.0
    assert features["best_disease_match"] == 0.0
    # "Recurrent pneumonia" lies below the commonplace "Pneumonia" and still counts, with what it adds.
    below = _child(["HP:0006532"], rng)
    assert kb.ontology.terms["HP:0006532"].parents and "HP:0002090" in kb.ontology.ancestors("HP:0006532")
    sharper = dict(zip(FEATURE_NAMES, score_child(below, kb).features, strict=True))
    assert sharper["informative_findings"] > 0 and sharper["information"] > 0
    # Two findings of a syndrome outweigh any number of commonplace ones.
    model = load_risk_model()
    syndromic = _child(["HP:0000347", "HP:0001629"], rng)  # micrognathia, ventricular septal defect
    syndromic.growth_z, syndromic.congenital_codes = {}, 0
    assert _risk(model, kb, syndromic) > _risk(model, kb, ordinary)


def test_findings_one_disease_explains_weigh_more_than_as_many_unrelated_ones(kb: KnowledgeBase) -> None:
    """``best_disease_match``: the sum over the findings of what each shares with the best-fitting disease
    (Resnik), so two specific findings of one disease count in full, two of unrelated diseases only one."""
    info = kb.information
    assert info is not None
    column = FEATURE_NAMES.index("best_disease_match")
    rng = random.Random(3)
    specific = [i for i in range(len(kb.term_ids)) if 5.0 < info.information[i] < 7.0 and info.informative_peak[i] > 0]
    coherent = unrelated = None
    while coherent is None or unrelated is None:
        a, b = rng.sample(specific, 2)
        diseases_a = set(info.shared.indices[info.shared.indptr[a] : info.shared.indptr[a + 1]].tolist())
        diseases_b = set(info.shared.indices[info.shared.indptr[b] : info.shared.indptr[b + 1]].tolist())
        if a in info.closure_of([b]) or b in info.closure_of([a]):
            continue
        if diseases_a & diseases_b:
            coherent = coherent or (a, b)
        elif unrelated is None:
            unrelated = (a, b)

    def feature(pair: tuple[int, int]) -> float:
        child = _child([kb.term_ids[i] for i in pair], random.Random(0))
        return float(score_child(child, kb).features[column])

    a, b = coherent
    assert feature(coherent) == pytest.approx(min(info.information[a] + info.information[b], 40.0) / 40.0)
    a, b = unrelated
    assert feature(unrelated) < (info.information[a] + info.information[b]) / 40.0
    assert feature(unrelated) >= max(info.information[a], info.information[b]) / 40.0 - 1e-12
    ordinary = _child(["HP:0001945", "HP:0000388", "HP:0011950", "HP:0000964"], rng)  # commonplace only
    assert score_child(ordinary, kb).features[column] == 0.0
    # The shortcut for one informative finding gives the same number as the per-disease sum.
    for _ in range(200):
        observed = rng.sample(range(len(kb.term_ids)), rng.choice([1, 1, 2, 3]))
        assert info.best_match_peak(observed) == float(info.best_match_total(observed).max())
