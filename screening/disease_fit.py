"""Whether a disease can fit a child: its onset and the sex it is seen in, from ``phenotype.hpoa``.

Onset comes from the clinical-course rows (aspect ``C``, terms under HPO "Onset") and the onset column
of phenotype rows; a disease whose every onset is adult (16 years or later) is unlikely to explain a
child's findings. Sex: a disease whose phenotype rows are (nearly) all reported in one sex, or half or more of whose phenotype lies in
one sex's organs (male infertility, uterine anomalies), or whose name says so ("female-restricted", "male-limited"),
is that sex's. Candidates of the other sex are left
out, adult-onset-only and later-onset diseases down-weighted; nothing here changes the risk, only the candidate list.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from screening.ontology import Ontology

__all__ = ["DiseaseFit", "read_disease_fit", "ONSET"]

ONSET = "HP:0003674"
_YEAR = 365.25
# Earliest age (days) of each onset class; a more specific onset term takes its nearest listed ancestor.
_ONSET_DAYS = {
    "HP:0030674": 0,  # antenatal
    "HP:0003577": 0,  # congenital
    "HP:0003623": 0,  # neonatal
    "HP:0003593": 28,  # infantile
    "HP:0011463": 365,  # childhood
    "HP:0410280": 0,  # pediatric (0-15 years)
    "HP:0003621": int(5 * _YEAR),  # juvenile
    "HP:0003581": int(16 * _YEAR),  # adult
    "HP:0011462": int(16 * _YEAR),  # young adult
    "HP:0003596": int(40 * _YEAR),  # middle age
    "HP:0003584": int(60 * _YEAR),  # late
}
ADULT_DAYS = int(16 * _YEAR)
EXCLUDED = -1e6  # a score no fitting disease reaches: the candidate goes to the end of the list
# A disease first seen years after the child's age is less likely; PhenoDP and LIRICAL use onset the
# same way, as one more likelihood ratio: 0.2 for a later childhood onset, 0.01 for adult onset only.
# Not an exclusion: onset annotations are incomplete, and leaving adult-onset diseases out entirely
# lost 0.4 points of top-1 on the published cases (``medscreen screening evaluate``, ranking).
LATE_ONSET_LOG_RATIO = math.log(0.2)
ADULT_ONSET_LOG_RATIO = math.log(0.01)
# Names that state adult onset ("Adult-onset cervical dystonia, DYT23 type", "Hypophosphatasia, adult"): used
# only for diseases with no onset annotated (20 of them), which otherwise reached
# the candidates of toddlers unweighted. "Late-onset" is left out ("late-onset juvenile"), and so is a name that
# also names an early age ("Intrauterine growth restriction-...-early adult-onset diabetes syndrome").
_ADULT_NAME = re.compile(r"\badult[- ]onset\b|,\s*adult(\s+(onset|type|form))?\s*$", re.I)
_EARLY_NAME = re.compile(r"\b(congenital|neonatal|infantile|intrauterine|childhood|juvenile|early)\b", re.I)
# A name that says the disease is one sex's ("X-linked 99, syndromic, female-restricted", "male-limited precocious
# puberty"): phenotype.hpoa reports no sex for those rows, and a boy's candidates had listed female-restricted ones.
_ONE_SEX_NAME = {"F": re.compile(r"\bfemale[- ](restricted|limited)\b", re.I), "M": re.compile(r"\bmale[- ](restricted|limited)\b", re.I)}
_MALE_TERMS = re.compile(r"\b(males?|testi\w*|testes|scrot\w*|penis|penile|sperm\w*|prostat\w*|cryptorchidism|micropenis|hypospadias|azoospermia)\b", re.I)
_FEMALE_TERMS = re.compile(r"\b(females?|uter\w*|ovar\w*|vagin\w*|menstrua\w*|amenorrh\w*|vulv\w*|clitor\w*)\b", re.I)


@dataclass
class DiseaseFit:
    earliest_onset_days: np.ndarray  # per disease; -1 when no onset is annotated
    sex: np.ndarray  # per disease: "M", "F" or "" (either)

    def adjustment(self, sex: str, age_days: int | None) -> np.ndarray:
        """Per disease, a log-ratio to add to its score for this child (0 where it fits)."""
        out = np.zeros(len(self.sex))
        if sex in ("M", "F"):
            out[self.sex == ("F" if sex == "M" else "M")] = EXCLUDED
        if age_days is not None:
            onset = self.earliest_onset_days
            if age_days < ADULT_DAYS:
                out[onset >= ADULT_DAYS] += ADULT_ONSET_LOG_RATIO
            late = (onset > age_days + _YEAR) & (onset < ADULT_DAYS)
            out[late] += LATE_ONSET_LOG_RATIO
        return out


def _onset_days(term: str, ontology: Ontology) -> int | None:
    primary = ontology.primary(term)
    if primary is None or ONSET not in ontology.ancestors(primary):
        return None
    best: tuple[int, int] | None = None  # (hops, days): the nearest listed ancestor
    frontier, hops, seen = [primary], 0, set()
    while frontier and best is None:
        for t in frontier:
            if t in _ONSET_DAYS:
                best = (hops, _ONSET_DAYS[t])
                break
        seen.update(frontier)
        frontier = [p for t in frontier for p in (ontology.terms[t].parents if t in ontology.terms else []) if p not in seen]
        hops += 1
    return None if best is None else best[1]


def _sex_specific_terms(ontology: Ontology) -> dict[str, str]:
    seeds = {"M": [], "F": []}  # type: dict[str, list[str]]
    for term in ontology.terms.values():
        female = bool(_FEMALE_TERMS.search(term.name))
        male = bool(_MALE_TERMS.search(term.name)) and not female
        if male:
            seeds["M"].append(term.id)
        elif female:
            seeds["F"].append(term.id)
    out: dict[str, str] = {}
    for sex, roots in seeds.items():
        for root in roots:
            for t in ontology.descendants(root):
                out[t] = "" if out.get(t, sex) != sex else sex
    return out


def read_disease_fit(path: Path, ontology: Ontology, disease_ids: list[str], names: list[str] | None = None) -> DiseaseFit:
    """Onset and sex of each disease from the annotations; ``names``: a disease with no onset annotated whose
    name states adult onset is given it."""
    index = {d: i for i, d in enumerate(disease_ids)}
    onset = np.full(len(disease_ids), -1, dtype=np.int64)
    sexes: list[dict[str, int]] = [{"M": 0, "F": 0} for _ in disease_ids]
    organ_sex: list[dict[str, int]] = [{"M": 0, "F": 0, "": 0} for _ in disease_ids]
    specific = _sex_specific_terms(ontology)
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or line.startswith("database_id"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 11 or cols[0] not in index or cols[2] == "NOT":
                continue
            i = index[cols[0]]
            days = _onset_days(cols[3], ontology) if cols[10] == "C" else None
            if days is None and cols[6]:
                days = _onset_days(cols[6], ontology)
            if days is not None:
                onset[i] = days if onset[i] < 0 else min(onset[i], days)
            if cols[10] == "P":
                if cols[8] in ("MALE", "FEMALE"):
                    sexes[i][cols[8][0]] += 1
                organ_sex[i][specific.get(ontology.primary(cols[3]) or "", "")] += 1
    for i, name in enumerate(names or []):
        if onset[i] < 0 and _ADULT_NAME.search(name) and not _EARLY_NAME.search(name):
            onset[i] = ADULT_DAYS
    sex = np.full(len(disease_ids), "", dtype="<U1")
    for i in range(len(disease_ids)):
        counts = organ_sex[i]
        total = sum(counts.values())
        reported = sexes[i]
        if total and reported["M"] >= 0.8 * total and reported["F"] == 0:
            sex[i] = "M"  # every phenotype was reported in males (X-linked, or male-limited)
        elif total and reported["F"] >= 0.8 * total and reported["M"] == 0:
            sex[i] = "F"
        elif total and counts["M"] * 2 >= total and counts["F"] == 0:
            sex[i] = "M"
        elif total and counts["F"] * 2 >= total and counts["M"] == 0:
            sex[i] = "F"
    for i, name in enumerate(names or []):
        named = [one for one, pattern in _ONE_SEX_NAME.items() if pattern.search(name)]
        if len(named) == 1:
            sex[i] = named[0]
    return DiseaseFit(earliest_onset_days=onset, sex=sex)
