"""The features and risks of a batch (population runs) are the child-by-child numbers bit for bit: each
batched function against the per-child one, on random children and on the edges (no findings, one
finding, only commonplace ones, values past every cap, a negative zero)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from screening.batch_screen import closures_of
from screening.best_disease_search import BestDiseaseSearch
from screening.features import FEATURE_CAPS, FEATURE_NAMES, score_child
from screening.features_batch import best_match_peaks, features_batch
from screening.findings import ChildFindings, Finding
from screening.information import load_common_findings
from screening.knowledge import KnowledgeBase
from screening.risk_model import load_risk_model


def _child(terms: list[str], rng: random.Random, growth: dict[str, float] | None = None, congenital: int = 0) -> ChildFindings:
    child = ChildFindings("c", rng.choice("MFU"), rng.randint(30, 2500), "screened")
    child.findings = [Finding(t, None, "hpo") for t in terms]
    child.growth_z = growth if growth is not None else {k: rng.gauss(0, 1.5) for k in ("lhfa", "hcfa", "wfa") if rng.random() < 0.7}
    child.congenital_codes = congenital
    return child


def _children(kb: KnowledgeBase, n: int, seed: int) -> list[ChildFindings]:
    rng = random.Random(seed)
    info = kb.information
    assert info is not None
    annotated = [t for t in kb.term_ids if info.information[kb.term_index[t]] < 9]
    specific = [t for t in annotated if info.information[kb.term_index[t]] > 5 and info.informative_peak[kb.term_index[t]] > 0]
    common = load_common_findings()
    children = [
        _child([], rng),  # no findings
        _child([], rng, growth={}),  # nothing at all
        _child([rng.choice(specific)], rng),  # one finding
        _child([common[0]], rng),  # one commonplace finding only
        _child([common[1], rng.choice(specific)], rng),  # one informative finding beside a commonplace one
        _child(common[:6], rng),  # only commonplace ones
        _child(rng.sample(specific, 30), rng, {"lhfa": -9.0, "hcfa": -5.0, "wfa": -7.5}, 9),  # past every cap
        _child([rng.choice(specific)], rng, {"lhfa": -2.0, "hcfa": 0.0, "wfa": -0.0}, 4),  # at the edges
        _child(["HP:0012759"], rng),  # neurodevelopmental
        _child(["HP:0000001-not-a-term"], rng),  # a code that maps to no term
    ]
    for _ in range(n):
        k = rng.choice([0, 1, 1, 2, 3, 5, 8, 20])
        pool = specific if rng.random() < 0.5 else annotated
        terms = rng.sample(pool, k) + rng.sample(common, rng.choice([0, 0, 1, 3]))
        children.append(_child(terms, rng, congenital=rng.choice([0, 0, 0, 1, 2, 5])))
    return children


def _batch(kb: KnowledgeBase, children: list[ChildFindings]) -> tuple[list[list[int]], list[np.ndarray], list[tuple[int, float]]]:
    info = kb.information
    assert info is not None
    observed = [kb.indices(child.present) for child in children]
    closures = closures_of(info, observed)
    return observed, closures, BestDiseaseSearch(info).best_diseases(closures)


def test_batched_features_are_the_child_by_child_features(kb: KnowledgeBase) -> None:
    children = _children(kb, 600, seed=31)
    observed, closures, bests = _batch(kb, children)
    batched = features_batch(children, kb, observed, closures, bests)
    one_by_one = np.array([score_child(child, kb).features for child in children])
    assert batched.dtype == one_by_one.dtype and batched.shape == one_by_one.shape
    assert np.array_equal(batched.view(np.int64), one_by_one.view(np.int64))  # bit for bit, signs of zero too
    # The edges were reached: every capped feature at its cap somewhere, and children with nothing.
    capped = [k for k, name in enumerate(FEATURE_NAMES) if name != "neurodevelopmental"]
    assert all(np.any(batched[:, k] == 1.0) for k in capped)
    assert np.any(~batched.any(axis=1))


def test_a_batch_of_none_or_one_child(kb: KnowledgeBase) -> None:
    assert features_batch([], kb, [], [], []).shape == (0, len(FEATURE_CAPS))
    for child in _children(kb, 0, seed=2):
        observed, closures, bests = _batch(kb, [child])
        batched = features_batch([child], kb, observed, closures, bests)
        assert np.array_equal(batched[0].view(np.int64), score_child(child, kb).features.view(np.int64))


def test_batched_best_disease_match_is_the_child_by_child_peak(kb: KnowledgeBase) -> None:
    info = kb.information
    assert info is not None
    rng = random.Random(8)
    informative = np.flatnonzero(info.informative_peak > 0.0).tolist()
    commonplace = np.flatnonzero(info.informative_peak == 0.0).tolist()
    observed: list[list[int]] = [[], [commonplace[0]], [informative[0]], [informative[-1], commonplace[1]]]
    for _ in range(800):
        terms = rng.sample(informative, rng.choice([1, 1, 2, 3, 6])) + rng.sample(commonplace, rng.choice([0, 1, 2]))
        observed.append(sorted(set(terms)))
    observed.append(observed[5])  # the same findings twice in a batch
    peaks = best_match_peaks(info, observed)
    assert peaks.tolist() == [info.best_match_peak(terms) for terms in observed]
    assert sum(len([f for f in o if info.informative_peak[f] > 0]) > 1 for o in observed) > 300


@pytest.mark.parametrize("rows", [0, 1, 5, 2000])
def test_risks_of_many_rows_are_each_rows_own_risk(kb: KnowledgeBase, rows: int) -> None:
    """``x @ coef`` over many rows is a matrix-vector product whose sums differ in the last bit from one
    row's dot product; ``risk_each`` keeps the served single-row figure."""
    model = load_risk_model()
    rng = np.random.default_rng(rows)
    features = rng.random((rows, len(FEATURE_NAMES)))
    features[rng.random(features.shape) < 0.4] = 0.0
    features[rng.random(features.shape) < 0.1] = 1.0
    features[: min(rows, 1)] = -0.0
    risks = model.risk_each(features)
    assert risks.shape == (rows,)
    assert risks.tolist() == [float(model.risk(row)[0]) for row in features]
    children = _children(kb, 200, seed=4)
    batched = features_batch(children, kb, *_batch(kb, children))
    assert model.risk_each(batched).tolist() == [float(model.risk(score_child(c, kb).features)[0]) for c in children]
