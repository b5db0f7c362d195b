"""Information content of HPO findings, and how much of it a disease's annotations share: the bounded,
monotone evidence the risk model is built on.

A term's information content is ``-log`` of the share of diseases whose annotations lie at or below it
(``phenotype.hpoa``), so a term is at least as informative as any of its ancestors. A child's findings
are taken with all their ancestors (the closure); each term of the closure adds its *gain*, the
information it carries beyond its most informative parent. The sum over the closure is the information
of the findings with shared ancestry counted once: one finding adds at most its own information content
(about 9.4 nats, a term of one disease in 12,633), adding a finding or replacing one by a more specific
one only enlarges the closure, so the information never falls. The same sum restricted to the closure of
one disease's annotations is the information the child shares with that disease (as in Phenomizer's
similarity); its maximum over diseases is again monotone in the findings.

Commonplace findings (``screening/data/common_findings.tsv``: fever, otitis media, eczema, ... seen in 1%
or more of ordinary children) are rare among *diseases* but not among *children*, so their information
content says nothing about a genetic disease: they and their ancestors carry no *informative* gain, and a
finding is *informative* when its closure reaches beyond them. Both are again defined per term over the
closure, so they never fall as evidence is added or sharpened.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import sparse

from screening.ontology import Ontology

__all__ = [
    "SharedInformation",
    "build_shared_information",
    "SPECIFIC_INFORMATION",
    "COMMON_FINDINGS",
    "load_common_findings",
]

# finding_match answers kept per process (12,633 floats each: about 25 MB at most).
KEPT_MATCHES = 256
# A finding is "specific" when at most about 1 disease in 50 is annotated at or below it.
SPECIFIC_INFORMATION = math.log(50.0)
COMMON_FINDINGS = Path(str(resources.files("screening") / "data" / "common_findings.tsv"))


def load_common_findings(path: Path | None = None) -> list[str]:
    """HPO ids of the commonplace findings of young children (first column of the table)."""
    with (path or COMMON_FINDINGS).open(encoding="utf-8") as handle:
        rows = csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t")
        return [row[0] for row in rows if row]


@dataclass
class SharedInformation:
    information: np.ndarray  # per term: information content, nats
    gain: np.ndarray  # per term: information beyond the most informative parent (>= 0)
    closure: sparse.csr_matrix  # term -> itself and its ancestors (0/1)
    shared: sparse.csr_matrix  # term x disease: 1 where the term lies at or above an annotation of the disease
    disease_total: np.ndarray  # per disease: the information of its own annotations' closure
    organ_system: np.ndarray  # per term: True for the organ systems (children of Phenotypic abnormality)
    informative_gain: np.ndarray  # per term: gain, 0 for commonplace findings and their ancestors
    # per term: the highest information content in its closure outside the commonplace findings and their
    # ancestors (0: the term says no more than "a commonplace finding")
    informative_peak: np.ndarray
    # finding_match answers kept (read-only): a population's flagged children and batches repeat findings
    _matches: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)
    # per disease, the size of its closure; per term, whether any disease is annotated at or below it
    _closure_sizes: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def best_match(self, observed: list[int], lesser: Sequence[int] = (), lesser_weight: float = 0.0) -> np.ndarray:
        """Per disease, the mean over the findings of the information content of the most informative
        term a finding shares with the disease's annotations (best-match average of Resnik similarity,
        patient to disease, as Phenomizer and PhenoDP rank): a disease is rewarded for explaining each
        finding specifically, not only for sharing much information in total. ``lesser`` findings count
        ``lesser_weight`` each in the mean (the served candidates' commonplace findings, ``screening.ranking``)."""
        total = np.zeros(self.shared.shape[1])
        for finding in observed:
            total += self.finding_match(finding, informative=False)
        if lesser_weight > 0.0 and lesser:
            for finding in lesser:
                total += lesser_weight * self.finding_match(finding, informative=False)
            return total / max(len(observed) + lesser_weight * len(lesser), 1e-9)
        return total / max(len(observed), 1)

    def best_match_total(self, observed: list[int]) -> np.ndarray:
        """Per disease, the sum over the findings of the information content of the most informative term
        a finding shares with the disease, commonplace findings and their ancestors apart: how strongly one
        disease explains the findings one by one. Unlike :meth:`per_disease`, two findings explained by
        the same specific annotation both count, so findings that cohere in one disease weigh more than
        as many unrelated ones. Monotone: another finding adds a non-negative term, and a finding's
        child term shares at least what the finding shared (its closure is larger)."""
        total = np.zeros(self.shared.shape[1])
        for finding in observed:
            if self.informative_peak[finding] > 0.0:
                total += self.finding_match(finding, informative=True)
        return total

    def best_match_peak(self, observed: list[int]) -> float:
        """The largest :meth:`best_match_total` over diseases. One informative finding (most ordinary
        children who have any) needs no per-disease vector: its best disease shares the most informative
        of its terms that some disease has at or below it."""
        informative = [f for f in observed if self.informative_peak[f] > 0.0]
        if len(informative) != 1:
            return float(self.best_match_total(informative).max()) if informative else 0.0
        f = informative[0]
        terms = self.closure.indices[self.closure.indptr[f] : self.closure.indptr[f + 1]]
        annotated = self.shared.indptr[terms + 1] > self.shared.indptr[terms]
        terms = terms[(self.informative_peak[terms] > 0.0) & annotated]
        return float(self.information[terms].max()) if len(terms) else 0.0

    def finding_match(self, finding: int, informative: bool) -> np.ndarray:
        """Per disease, the information content of the most informative term of the finding's closure
        that the disease shares (Resnik similarity); ``informative``: leaving out commonplace findings and
        their ancestors (the terms whose informative peak is 0, since that set is closed upwards).

        The answer is kept (up to :data:`KEPT_MATCHES` findings, 100 KB each) and read-only."""
        key = (finding, informative)
        kept = self._matches.get(key)
        if kept is not None:
            return kept
        if len(self._matches) >= KEPT_MATCHES:
            self._matches.clear()
        best = self._finding_match(finding, informative)
        best.setflags(write=False)
        self._matches[key] = best
        return best

    def _finding_match(self, finding: int, informative: bool) -> np.ndarray:
        terms = self.closure.indices[self.closure.indptr[finding] : self.closure.indptr[finding + 1]]
        if informative:
            terms = terms[self.informative_peak[terms] > 0.0]
        best = np.zeros(self.shared.shape[1])
        indptr, indices = self.shared.indptr, self.shared.indices
        for term in terms[np.argsort(self.information[terms])]:  # least informative first: the last write wins
            best[indices[indptr[term] : indptr[term + 1]]] = self.information[term]
        return best

    def cooccurrence(self, closure: np.ndarray) -> np.ndarray:
        """Per disease, the phi coefficient between the findings' closure and the disease's closure over the
        terms any disease is annotated at or below (PhenoDP's co-occurrence measure): set overlap corrected for
        both sets' sizes, every term counted alike. Measured beside the served ranker (``screening.ranking``)."""
        if self._closure_sizes is None:
            annotated_terms = np.diff(self.shared.indptr) > 0
            self._closure_sizes = (np.asarray(self.shared.sum(axis=0), dtype=np.float64).ravel(), annotated_terms)
        sizes, annotated_terms = self._closure_sizes
        terms = closure[annotated_terms[closure]] if len(closure) else closure
        both = np.asarray(self.shared[terms].sum(axis=0), dtype=np.float64).ravel() if len(terms) else np.zeros(len(sizes))
        universe, findings_only, disease_only = float(annotated_terms.sum()), len(terms) - both, sizes - both
        neither = universe - both - findings_only - disease_only
        denominator = np.sqrt(np.maximum((both + findings_only) * (disease_only + neither) * (both + disease_only) * (findings_only + neither), 1e-12))
        return (both * neither - findings_only * disease_only) / denominator

    def informative_total(self, closure: np.ndarray) -> float:
        """Information of the findings beyond commonplace childhood findings (monotone, like :meth:`total`)."""
        return float(self.informative_gain[closure].sum())

    def closure_of(self, observed: list[int]) -> np.ndarray:
        """Term indices of the findings and all their ancestors."""
        if not observed:
            return np.zeros(0, dtype=np.int64)
        rows = np.asarray(observed)
        starts, ends = self.closure.indptr[rows], self.closure.indptr[rows + 1]
        return np.unique(np.concatenate([self.closure.indices[a:b] for a, b in zip(starts, ends, strict=True)]))

    def total(self, closure: np.ndarray) -> float:
        return float(self.gain[closure].sum())

    def per_disease(self, closure: np.ndarray) -> np.ndarray:
        """Information each disease shares with the findings (dense over diseases)."""
        if len(closure) == 0:
            return np.zeros(self.shared.shape[1])
        # Row selection and a transposed product, both in scipy's C code: a few hundred microseconds.
        return np.asarray(self.shared[closure].T @ self.gain[closure]).ravel()


    def best_diseases(self, closures: list[np.ndarray]) -> list[tuple[int, float]]:
        """For a batch of children, ``(argmax, max)`` of :meth:`per_disease`, as one sparse product
        (children x terms, weighted by gain) @ (terms x diseases): the same additions in the same
        order as :meth:`per_disease`, so the same numbers, without a dense vector per child."""
        lengths = np.fromiter((len(c) for c in closures), dtype=np.int64, count=len(closures))
        columns = np.concatenate(closures) if len(closures) else np.zeros(0, dtype=np.int64)
        indicator = sparse.csr_matrix(
            (self.gain[columns], columns, np.concatenate([[0], np.cumsum(lengths)])),
            shape=(len(closures), self.shared.shape[0]),
        )
        product = (indicator @ self.shared).tocsr()  # scipy keeps no sum that is exactly 0
        out: list[tuple[int, float]] = []
        data, cols, ptr = product.data, product.indices, product.indptr
        for row in range(len(closures)):
            segment = data[ptr[row] : ptr[row + 1]]
            best = float(segment.max()) if len(segment) else 0.0
            if best <= 0.0:
                out.append((0, 0.0))  # np.argmax of an all-zero vector
            else:  # np.argmax of the dense vector: the lowest disease index holding the maximum
                out.append((int(cols[ptr[row] : ptr[row + 1]][segment == best].min()), best))
        return out


def build_shared_information(
    ontology: Ontology, term_ids: list[str], annotations: sparse.csr_matrix, common: list[str] | None = None
) -> SharedInformation:
    """From the (term x disease) annotation matrix, as built in ``screening/knowledge.py``; ``common``: the
    commonplace findings (default: ``screening/data/common_findings.tsv``)."""
    index = {t: i for i, t in enumerate(term_ids)}
    n_terms, n_diseases = annotations.shape
    rows, cols = [], []
    for t in term_ids:
        for a in ontology.ancestors(t):
            if a in index:
                rows.append(index[t])
                cols.append(index[a])
    closure = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_terms, n_terms))
    closure.sort_indices()
    pattern = annotations.copy().tocsr()
    pattern.data = np.ones_like(pattern.data, dtype=np.float32)
    shared = (closure.T.tocsr() @ pattern).tocsr()
    shared.data = np.ones_like(shared.data, dtype=np.float32)
    shared.sort_indices()
    diseases_below = np.diff(shared.indptr).astype(np.float64)
    # A term no disease is annotated at or below counts as half a disease: rarest, but finite.
    information = np.log(n_diseases / np.maximum(diseases_below, 0.5))
    gain = np.zeros(n_terms)
    for t, i in index.items():
        parents = [index[p] for p in ontology.terms[t].parents if p in index]
        floor = max((information[p] for p in parents), default=0.0)
        gain[i] = max(information[i] - floor, 0.0)
    disease_total = np.asarray(shared.T @ gain).ravel()
    organ_system = np.zeros(n_terms, dtype=bool)
    organ_system[[index[t] for t in ontology.organ_systems if t in index]] = True
    commonplace = np.zeros(n_terms, dtype=bool)
    for t in load_common_findings() if common is None else common:
        primary = ontology.primary(t)
        if primary in index:
            i = index[primary]
            commonplace[closure.indices[closure.indptr[i] : closure.indptr[i + 1]]] = True
    informative_gain = np.where(commonplace, 0.0, gain)
    informative_information = np.where(commonplace, 0.0, information)
    peak = np.maximum.reduceat(informative_information[closure.indices], closure.indptr[:-1])
    return SharedInformation(
        information, gain, closure, shared, disease_total, organ_system, informative_gain, peak
    )
