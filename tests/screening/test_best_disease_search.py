"""The pruned best-disease search of population runs gives the full sparse product's numbers, bit for bit:
the same disease (the lowest index among ties) and the same float, for every kind of child."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest

from screening import best_disease_search
from screening.best_disease_search import BestDiseaseSearch
from screening.findings import CodeMaps
from screening.knowledge import KnowledgeBase
from screening.screener import Screener
from screening.simulate import simulate_controls
from tests.screening.conftest import ordinary_child, syndromic_child


def _closures(screener: Screener, maps: CodeMaps, n: int) -> list[np.ndarray]:
    kb = screener.kb
    assert kb.information is not None
    records = [record for record, _ in simulate_controls(maps, n, seed=23)]
    records += [syndromic_child(f"s-{i}") for i in range(3)] + [ordinary_child("o")]
    found = [screener.findings(r, date(2025, 6, 1))[1] for r in records]
    return [kb.information.closure_of(kb.indices(child.present)) for child in found]


def test_the_search_finds_what_the_full_product_finds(screener: Screener, kb: KnowledgeBase, maps: CodeMaps) -> None:
    info = kb.information
    assert info is not None
    closures = _closures(screener, maps, 1500)
    shared_before = info.shared.copy()
    search = BestDiseaseSearch(info)
    assert (info.shared != shared_before).nnz == 0  # building the index leaves the knowledge as it was
    general = np.flatnonzero(search.general)
    rng = random.Random(5)
    closures += [
        np.zeros(0, dtype=np.int64),  # no findings
        info.closure_of([int(general[0])]),  # only general terms: through the full product
        info.closure_of([int(t) for t in rng.sample(list(general), 4)]),
        closures[0].copy(),  # the same closure twice in a batch
    ]
    for size in (1, 7, 500):  # batch sizes, the last as population runs use them
        for start in range(0, len(closures), size):
            batch = closures[start : start + size]
            assert search.best_diseases(batch) == info.best_diseases(batch)
    assert sum(1 for c in closures if len(c)) > 1000


def test_a_narrow_split_sends_more_children_through_the_full_product(kb: KnowledgeBase, screener: Screener, maps: CodeMaps) -> None:
    info = kb.information
    assert info is not None
    closures = _closures(screener, maps, 300)
    for general_above in (50, 300, 5000):
        assert BestDiseaseSearch(info, general_above).best_diseases(closures) == info.best_diseases(closures)


def test_answers_kept_across_batches_are_the_same_and_stay_bounded(
    kb: KnowledgeBase, screener: Screener, maps: CodeMaps, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = kb.information
    assert info is not None
    closures = _closures(screener, maps, 400)
    closures += [c.astype(np.int32) for c in closures[:50]]  # the same closures as another integer type
    monkeypatch.setattr(best_disease_search, "KNOWN_CLOSURES", 120)
    search = BestDiseaseSearch(info)
    expected = info.best_diseases(closures)
    for _ in range(2):  # the second round finds most answers kept, some after the store was emptied
        for start in range(0, len(closures), 100):
            assert search.best_diseases(closures[start : start + 100]) == expected[start : start + 100]
            assert len(search._known) <= 120
