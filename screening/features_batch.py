"""The risk model's features of a batch of children at once (population runs): the same numbers, bit for
bit, as :func:`screening.features.score_child` child by child, as array operations over the batch.

Sums of floats keep the per-child order: the information of each child's closure is numpy's sum of that
child's slice (``np.add.reduceat`` adds in another order and differs in the last bit), and the summed
Resnik similarity of ``best_disease_match`` goes through a sparse product that adds each disease's
terms finding by finding, as the per-child loop does. Counts, maxima and the caps are exact anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from screening.features import FEATURE_CAPS, FEATURE_NAMES, NEURODEVELOPMENTAL
from screening.findings import ChildFindings
from screening.information import SPECIFIC_INFORMATION, SharedInformation
from screening.knowledge import KnowledgeBase

__all__ = ["features_batch", "best_match_peaks"]

_GROWTH = (("lhfa", "height_deficit"), ("hcfa", "head_deficit"), ("wfa", "weight_deficit"))


def _capped(values: np.ndarray, name: str) -> np.ndarray:
    """``features._capped`` of each value: Python's ``min(max(value, 0.0), cap) / cap``, including which
    operand ``max`` and ``min`` return on ties and NaN."""
    cap = FEATURE_CAPS[name]
    floored = np.where(0.0 > values, 0.0, values)
    return np.where(cap < floored, cap, floored) / cap


def _owners(lengths: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(lengths)), lengths)


def features_batch(
    children: Sequence[ChildFindings],
    kb: KnowledgeBase,
    observed: Sequence[list[int]],
    closures: Sequence[np.ndarray],
    best_diseases: Sequence[tuple[int, float]],
) -> np.ndarray:
    """Rows of features (children x :data:`FEATURE_NAMES`) of screened children, given each child's
    observed term indices (``kb.indices(child.present)``), their closures
    (``screening.batch_screen.closures_of``) and best diseases (``BestDiseaseSearch.best_diseases``)."""
    info = kb.information
    if info is None:
        raise ValueError("the knowledge base was built without information content")
    n = len(children)
    features = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    if n == 0:
        return features
    column = {name: k for k, name in enumerate(FEATURE_NAMES)}
    found = np.fromiter(map(len, observed), np.int64, n)
    terms = np.fromiter((t for ts in observed for t in ts), np.int64, int(found.sum()))
    peak = info.informative_peak[terms]
    owner = _owners(found)
    widths = np.fromiter(map(len, closures), np.int64, n)
    closure = np.concatenate(closures).astype(np.int64)
    in_closure = _owners(widths)
    gains = info.informative_gain[closure]
    bounds = np.concatenate([[0], np.cumsum(widths)]).tolist()
    information = np.fromiter(
        (gains[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)), np.float64, n
    )  # numpy's sum of each slice, as ``SharedInformation.informative_total`` of the child's closure
    rows = np.flatnonzero(found > 0)  # a child without findings keeps 0.0 in these, as in score_child
    values = {
        "informative_findings": np.bincount(owner[peak > 0.0], minlength=n).astype(np.float64),
        "specific_findings": np.bincount(owner[peak >= SPECIFIC_INFORMATION], minlength=n).astype(np.float64),
        "information": information,
        "best_disease_information": np.fromiter((value for _, value in best_diseases), np.float64, n),
        "best_disease_match": best_match_peaks(info, observed),
    }
    for name, value in values.items():
        features[rows, column[name]] = _capped(value[rows], name)
    systems = np.bincount(in_closure[info.organ_system[closure]], minlength=n)
    features[:, column["organ_systems"]] = _capped(systems.astype(np.float64), "organ_systems")
    for indicator, name in _GROWTH:
        z = np.fromiter((child.growth_z.get(indicator, 0.0) for child in children), np.float64, n)
        features[:, column[name]] = _capped(-2.0 - z, name)
    congenital = np.fromiter((child.congenital_codes for child in children), np.float64, n)
    features[:, column["congenital_codes"]] = _capped(congenital, "congenital_codes")
    neuro = kb.term_index.get(NEURODEVELOPMENTAL, -1)
    features[:, column["neurodevelopmental"]] = np.bincount(in_closure[closure == neuro], minlength=n) > 0
    return features


def best_match_peaks(info: SharedInformation, observed: Sequence[list[int]]) -> np.ndarray:
    """:meth:`SharedInformation.best_match_peak` of each child's observed term indices.

    One informative finding: the most informative annotated term of its closure beyond the commonplace
    ones (a maximum, computed once per distinct finding). Several: each distinct finding's Resnik
    similarity to every disease (``finding_match``, once per finding of the batch) as a sparse row,
    summed per child by one sparse product whose per-disease sums add the findings in the child's order,
    as ``best_match_total`` does (a finding a disease shares nothing with adds +0.0 there, which
    changes no sum); the largest sum, or 0.0 when no disease shares anything.
    """
    n = len(observed)
    out = np.zeros(n)
    informative = [[f for f in terms if info.informative_peak[f] > 0.0] for terms in observed]
    singles = [i for i, fs in enumerate(informative) if len(fs) == 1]
    if singles:
        firsts = np.array([informative[i][0] for i in singles], dtype=np.int64)
        firsts_distinct, slot = np.unique(firsts, return_inverse=True)
        out[singles] = _single_peaks(info, firsts_distinct)[slot]
    several = [i for i, fs in enumerate(informative) if len(fs) > 1]
    if several:
        distinct = sorted({f for i in several for f in informative[i]})
        slot_of = {f: k for k, f in enumerate(distinct)}
        matches = [info.finding_match(f, informative=True) for f in distinct]
        diseases = [np.flatnonzero(m) for m in matches]
        resnik = sparse.csr_matrix(
            (
                np.concatenate([m[d] for m, d in zip(matches, diseases, strict=True)]),
                np.concatenate(diseases),
                np.concatenate([[0], np.cumsum([len(d) for d in diseases])]),
            ),
            shape=(len(distinct), info.shared.shape[1]),
        )
        lengths = [len(informative[i]) for i in several]
        columns = [slot_of[f] for i in several for f in informative[i]]  # ascending: the child's order
        indicator = sparse.csr_matrix(
            (np.ones(len(columns)), columns, np.concatenate([[0], np.cumsum(lengths)])),
            shape=(len(several), len(distinct)),
        )
        # csr_matmat adds 1.0 * value into each disease's sum, row entry after row entry: the child's
        # findings in order, as ``best_match_total``'s dense loop.
        totals = (indicator @ resnik).tocsr()
        ptr, data = totals.indptr, totals.data
        out[several] = [float(data[a:b].max()) if b > a else 0.0 for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
    return out


def _single_peaks(info: SharedInformation, findings: np.ndarray) -> np.ndarray:
    """``best_match_peak([f])`` of each informative finding ``f``: the largest information content of a
    term of its closure that is informative and that some disease is annotated at or below."""
    starts, ends = info.closure.indptr[findings], info.closure.indptr[findings + 1]
    lengths = ends - starts
    position = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
    terms = info.closure.indices[position].astype(np.int64)
    annotated = info.shared.indptr[terms + 1] > info.shared.indptr[terms]
    candidate = np.where((info.informative_peak[terms] > 0.0) & annotated, info.information[terms], -np.inf)
    peaks = np.full(len(findings), -np.inf)
    nonempty = lengths > 0
    if np.any(nonempty):
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        peaks[nonempty] = np.maximum.reduceat(candidate, offsets[nonempty])
    return np.where(np.isneginf(peaks), 0.0, peaks)
