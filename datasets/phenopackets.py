"""Read GA4GH Phenopacket v2 JSON cases (monarch-initiative phenopacket-store) as typed records."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import LabelsError

__all__ = ["PhenotypicFeature", "PhenopacketCase", "read_phenopacket", "iter_phenopackets", "iso_age_days"]

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T.*)?$")
# HPO onset classes -> a representative age in days, for features whose onset is given as a class.
ONSET_CLASS_DAYS = {
    "HP:0030674": 0,  # antenatal
    "HP:0011460": 0,  # embryonal
    "HP:0011461": 0,  # fetal
    "HP:0003577": 0,  # congenital
    "HP:0003623": 14,  # neonatal
    "HP:0003593": 180,  # infantile
    "HP:0011463": 730,  # childhood
    "HP:0410280": 1500,  # pediatric
    "HP:0003621": 2500,  # juvenile
}


def iso_age_days(duration: str) -> int | None:
    """``P2Y3M`` -> days (365.25 per year, 30.44 per month), None if not an ISO 8601 duration."""
    match = _DURATION.match(duration.strip())
    if not match or duration.strip() == "P":
        return None
    years, months, weeks, days = (int(g or 0) for g in match.groups())
    return int(round(years * 365.25 + months * 30.4375 + weeks * 7 + days))


def _age(element: dict | None) -> int | None:
    if not element:
        return None
    if "age" in element:
        return iso_age_days(element["age"].get("iso8601duration", ""))
    if "ontologyClass" in element:
        return ONSET_CLASS_DAYS.get(element["ontologyClass"].get("id", ""))
    if "gestationalAge" in element:
        return 0
    return None


@dataclass(frozen=True)
class PhenotypicFeature:
    hpo: str
    excluded: bool
    onset_days: int | None


@dataclass(frozen=True)
class PhenopacketCase:
    id: str
    sex: str  # M, F or U
    age_days: int | None  # time at last encounter
    features: tuple[PhenotypicFeature, ...]
    diseases: tuple[str, ...]  # OMIM/ORPHA ids
    path: str


def read_phenopacket(path: Path) -> PhenopacketCase:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or "phenotypicFeatures" not in data and "diseases" not in data:
        raise LabelsError(f"{path}: not a phenopacket (no phenotypicFeatures or diseases)")
    subject = data.get("subject") or {}
    sex = {"MALE": "M", "FEMALE": "F"}.get(subject.get("sex", ""), "U")
    features = tuple(
        PhenotypicFeature(
            hpo=f["type"]["id"],
            excluded=bool(f.get("excluded", False)),
            onset_days=_age(f.get("onset")),
        )
        for f in data.get("phenotypicFeatures", [])
        if isinstance(f, dict) and "type" in f
    )
    diseases = tuple(d["term"]["id"] for d in data.get("diseases", []) if not d.get("excluded"))
    return PhenopacketCase(
        id=str(data.get("id", path.stem)),
        sex=sex,
        age_days=_age(subject.get("timeAtLastEncounter")),
        features=features,
        diseases=diseases,
        path=str(path),
    )


def iter_phenopackets(folder: Path) -> Iterator[PhenopacketCase]:
    """Every phenopacket under ``folder`` (recursively), in a stable order; unreadable files are logged."""
    for path in sorted(folder.rglob("*.json")):
        try:
            yield read_phenopacket(path)
        except LabelsError as exc:
            logger.warning("skipping %s", exc)
