"""Screen a batch of children at once: findings per child, then the knowledge part of the whole batch (the
disease each child shares most information with, among 12,633) through
:class:`screening.best_disease_search.BestDiseaseSearch`, then features and risk per child.

The same results as :meth:`Screener.screen` child by child (the search adds the same numbers in the same
order as the per-child product); population runs (``screening/population.py``) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from datasets.emr_records import ChildRecord
from screening.screener import Screener, ScreeningResult

__all__ = ["screen_batch"]


def screen_batch(screener: Screener, records: Sequence[ChildRecord], as_of: date) -> list[ScreeningResult]:
    """Screen ``records`` as of ``as_of``; flagged children are explained, as by :meth:`Screener.screen`."""
    kb = screener.kb
    started = [screener.findings(record, as_of) for record in records]
    screened = [i for i, (_, child) in enumerate(started) if child.status == "screened"]
    bests: dict[int, tuple[int, float]] = {}
    if kb.information is not None and screener.best_disease_search is not None and screened:
        closures = [kb.information.closure_of(kb.indices(started[i][1].present)) for i in screened]
        bests = dict(zip(screened, screener.best_disease_search.best_diseases(closures), strict=True))
    results = []
    for i, (result, child) in enumerate(started):
        scored = screener.risk(result, child, bests.get(i))
        if scored is not None and result.flagged:
            screener.explain(result, scored)
        results.append(result)
    return results
