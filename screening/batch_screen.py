"""Screen a batch of children at once: the findings of the whole batch (``screening/findings_batch.py``), the
closures of their findings as one sparse product, then the knowledge part of the whole batch (the disease
each child shares most information with, among 12,633) through
:class:`screening.best_disease_search.BestDiseaseSearch`, then the features of the batch as arrays
(``screening/features_batch.py``) and their risks (:meth:`RiskModel.risk_each`); only the flagged few are
scored again child by child, for their explanation.

The same results as :meth:`Screener.screen` child by child (the batched findings and closures are the
same values; the search and the features add the same numbers in the same order as the per-child code);
population runs (``screening/population.py``) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
from scipy import sparse

from datasets.emr_records import ChildRecord
from screening.features import score_child
from screening.features_batch import features_batch
from screening.findings_batch import extract_findings_batch
from screening.information import SharedInformation
from screening.screener import Screener, ScreeningResult

__all__ = ["screen_batch", "closures_of"]


def screen_batch(screener: Screener, records: Sequence[ChildRecord], as_of: date) -> list[ScreeningResult]:
    """Screen ``records`` as of ``as_of``; flagged children are explained, as by :meth:`Screener.screen`."""
    kb = screener.kb
    children = extract_findings_batch(records, screener.maps, as_of, screener.max_age_days)
    started = [screener.started(record, child) for record, child in zip(records, children, strict=True)]
    search = screener.best_disease_search
    if kb.information is None or search is None:  # score_child says what is missing
        for result, child in started:
            scored = screener.risk(result, child)
            if scored is not None and result.flagged:
                screener.explain(result, scored)
        return [result for result, _ in started]
    screened = [i for i, child in enumerate(children) if child.status == "screened"]
    observed = [kb.indices(children[i].present) for i in screened]
    closures = closures_of(kb.information, observed) if screened else []
    bests = search.best_diseases(closures) if screened else []
    features = features_batch([children[i] for i in screened], kb, observed, closures, bests)
    for k, (i, risk) in enumerate(zip(screened, screener.model.risk_each(features).tolist(), strict=True)):
        result, child = started[i]
        screener.judge(result, risk)
        if result.flagged:  # the few flagged: their scores again, child by child, for the explanation
            screener.explain(result, score_child(child, kb, best_disease=bests[k]))
    return [result for result, _ in started]


def closures_of(info: SharedInformation, observed: list[list[int]]) -> list[np.ndarray]:
    """:meth:`SharedInformation.closure_of` of each child's findings, the same arrays: the rows of one
    sparse product (children x terms) @ (term -> its ancestors), whose sorted column indices are each
    child's terms and their ancestors, instead of a concatenation and ``np.unique`` per child."""
    lengths = np.fromiter(map(len, observed), np.int64, len(observed))
    columns = np.fromiter((t for terms in observed for t in terms), np.int64, int(lengths.sum()))
    indicator = sparse.csr_matrix(
        (np.ones(len(columns), dtype=info.closure.dtype), columns, np.concatenate([[0], np.cumsum(lengths)])),
        shape=(len(observed), info.closure.shape[0]),
    )
    product = (indicator @ info.closure).tocsr()  # positive counts: no entry cancels
    product.sort_indices()
    terms = product.indices.astype(info.closure.indices.dtype, copy=False)
    ptr = product.indptr.tolist()
    empty = np.zeros(0, dtype=np.int64)  # as closure_of answers no findings
    return [terms[a:b] if b > a else empty for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
