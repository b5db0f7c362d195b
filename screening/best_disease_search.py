"""The best-matching disease of each child of a batch (``SharedInformation.best_diseases``), the same
numbers bit for bit, at a fraction of the cost: most of the full product is spent on general terms.

The full product adds, for every disease, the gains of the child's closure terms the disease shares,
in ascending term order. A general term (an organ system, "Short stature": shared with more than
:data:`GENERAL_TERM_DISEASES` diseases) costs thousands of additions but says little about *which*
disease fits; the best disease almost always shares one of the child's specific terms. So:

1. the diseases sharing a specific term of the child are the candidates, with their specific part;
2. candidates whose specific part plus all the child's general information cannot reach the best
   specific part are dropped (an upper bound: gains are never negative);
3. each remaining (child, candidate) pair is added up exactly as the full product does (the same
   additions in the same order; whether the disease shares a term is a lookup in a bit matrix);
4. a disease outside the candidates shares only general terms, so it holds at most the running sum
   of the child's general gains (floating-point addition of non-negative numbers is monotone); when
   the best candidate is strictly above that, it is the answer (ties included: every disease that
   could tie it is a candidate). Otherwise, rarely, the child goes through the full product.

Children with the same closure (common in a population) are computed once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from screening.information import SharedInformation

__all__ = ["BestDiseaseSearch", "GENERAL_TERM_DISEASES", "KNOWN_CLOSURES"]

# Measured on 1,000 simulated children: with terms above 1,000 diseases taken as general, about 50
# candidates per child are summed exactly and 1% of children need the full product (300: 70 and 25%;
# 3,000: 70 and none).
GENERAL_TERM_DISEASES = 1000
# Answers kept across batches (~150 bytes each: about 15 MB at most); emptied when full.
KNOWN_CLOSURES = 100_000
# Sums in another order differ by a few ulps; the pruning bound is widened by far more than that.
_SLACK = 1e-9


@dataclass(frozen=True)
class _Closures:
    """A batch's closures, concatenated: term indices and their gains, ``indptr`` and lengths per child."""

    columns: np.ndarray
    values: np.ndarray
    indptr: np.ndarray
    lengths: np.ndarray
    rows_at: np.ndarray  # where each term's row of the bit matrix starts, flattened


class BestDiseaseSearch:
    """Built once per process from the knowledge base (``shared`` as bits, ~30 MB)."""

    def __init__(self, info: SharedInformation, general_above: int = GENERAL_TERM_DISEASES) -> None:
        self.info = info
        shared = info.shared.tocsr()
        self.n_terms, self.n_diseases = shared.shape
        self.general = np.diff(shared.indptr) > general_above
        keep = np.repeat(~self.general, np.diff(shared.indptr)).astype(np.float32)
        specific = sparse.csr_matrix(
            (shared.data * keep, shared.indices.copy(), shared.indptr.copy()), shape=shared.shape
        )  # copies: eliminate_zeros works in place and must not touch ``shared``
        specific.eliminate_zeros()
        self.specific = specific  # term -> diseases, specific terms only (general rows empty)
        # term x disease as bits (~30 MB): whether a disease shares a term is one lookup.
        rows = np.repeat(np.arange(self.n_terms), np.diff(shared.indptr))
        bits = np.zeros((self.n_terms, (self.n_diseases + 7) // 8), dtype=np.uint8)
        np.bitwise_or.at(bits, (rows, shared.indices >> 3), (1 << (shared.indices & 7)).astype(np.uint8))
        self.bits = bits
        self._known: dict[bytes, tuple[int, float]] = {}  # closure bytes -> answer, across batches

    def best_diseases(self, closures: list[np.ndarray]) -> list[tuple[int, float]]:
        """``(argmax, max)`` of each child's shared information, as :meth:`SharedInformation.best_diseases`.

        Answers are kept across batches (a population repeats closures: 6,000 ordinary children hold
        2,281 distinct ones, a batch of 1,000 about 560), up to :data:`KNOWN_CLOSURES`; the answer is a
        function of the closure alone, so what is kept never changes a result."""
        known = self._known
        if len(known) + len(closures) > KNOWN_CLOSURES:
            known.clear()  # before the batch: every answer it needs is then kept until it returns
        # The bytes name the closure whatever its integer type: indices are sorted, non-negative and far
        # below 2**31, so an int32 closure's bytes are never an int64 closure's.
        keys = [closure.tobytes() for closure in closures]
        new: dict[bytes, np.ndarray] = {}  # the closures not yet known, in first-seen order
        for key, closure in zip(keys, closures, strict=True):
            if key not in known and key not in new:
                new[key] = closure
        if new:
            known.update(zip(new, self._unique(list(new.values())), strict=True))
        return [known[key] for key in keys]

    def _unique(self, closures: list[np.ndarray]) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = [(0, 0.0)] * len(closures)
        rows = [i for i, c in enumerate(closures) if len(c)]
        if not rows:
            return out
        gain = self.info.gain
        lengths = np.array([len(closures[i]) for i in rows], dtype=np.int64)
        columns = np.concatenate([closures[i] for i in rows]).astype(np.int64)
        values = gain[columns]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        batch = _Closures(columns, values, indptr, lengths, columns * self.bits.shape[1])
        owner = np.repeat(np.arange(len(rows)), lengths)
        is_general = self.general[columns]
        # The running sum, in term order, of each child's general gains: no non-candidate exceeds it.
        general_sum = np.bincount(owner[is_general], weights=values[is_general], minlength=len(rows))
        spec_values = np.where(is_general, 0.0, values)
        specific_part = (sparse.csr_matrix((spec_values, columns, indptr), shape=(len(rows), self.n_terms)) @ self.specific).tocsr()

        ptr, cols, data = specific_part.indptr, specific_part.indices, specific_part.data
        has_candidates = np.diff(ptr) > 0
        candidate_rows = np.flatnonzero(has_candidates)
        # A lower bound of each child's best: the exact sum of its best candidate by the specific part.
        top = np.array([ptr[r] + int(np.argmax(data[ptr[r] : ptr[r + 1]])) for r in candidate_rows], dtype=np.int64)
        lower = np.zeros(len(rows))
        lower[candidate_rows] = self._exact(batch, candidate_rows, cols[top].astype(np.int64))
        # Keep a candidate only if its specific part plus all the child's general information can reach it.
        row_of = np.repeat(np.arange(len(rows)), np.diff(ptr))
        ceiling = data + general_sum[row_of] + _SLACK * (1.0 + general_sum[row_of] + data)
        keep = ceiling >= lower[row_of]
        prs, pds = row_of[keep], cols[keep].astype(np.int64)
        exact = self._exact(batch, prs, pds)
        done = np.zeros(len(rows), dtype=bool)
        if len(prs):
            starts = np.flatnonzero(np.concatenate([[True], prs[1:] != prs[:-1]]))
            ends = np.concatenate([starts[1:], [len(prs)]])
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                r = int(prs[a])
                segment = exact[a:b]
                best = float(segment.max())
                if best > general_sum[r] and best > 0.0:
                    out[rows[r]] = (int(pds[a:b][segment == best].min()), best)
                    done[r] = True
        fallback = np.flatnonzero(~done).tolist()
        if fallback:
            for r, found in zip(fallback, self.info.best_diseases([closures[rows[r]] for r in fallback]), strict=True):
                out[rows[r]] = found
        return out

    def _exact(self, closures: _Closures, pair_rows: np.ndarray, pair_diseases: np.ndarray) -> np.ndarray:
        """The shared information of each (child row, disease) pair, added up as the full product does:
        the gains of the child's closure terms that the disease shares, one after the other in term order
        (``np.bincount`` adds its weights in input order; a term not shared adds +0.0, which changes
        no sum). Whether a disease shares a term is one byte of the flat bit matrix, taken at the term's
        row plus the disease's byte, then shifted: fewer passes over the pairs' terms than 2-D indexing
        (about a third less time)."""
        if not len(pair_rows):
            return np.zeros(0)
        counts = closures.lengths[pair_rows]
        ends = np.cumsum(counts)
        pair_of = np.repeat(np.arange(len(pair_rows)), counts)
        position = np.arange(int(ends[-1]), dtype=np.int64)
        position += np.repeat(closures.indptr[pair_rows] - (ends - counts), counts)
        flat = closures.rows_at[position]
        flat += np.repeat(pair_diseases >> 3, counts)
        shares = self.bits.ravel().take(flat)
        shares >>= np.repeat((pair_diseases & 7).astype(np.uint8), counts)
        shares &= 1
        weights = closures.values[position]
        weights *= shares
        return np.bincount(pair_of, weights=weights, minlength=len(pair_rows))
