"""A preterm child's growth read at corrected age, as paediatricians read a growth chart.

A child born at 30 weeks is 10 weeks younger, for growth, than the birth date says: on the WHO charts by
chronological age, that child's length, head and weight sit below -2 SD for months, and the screener read
"short stature", "microcephaly" and "decreased weight" into a record of ordinary prematurity. Until the second
birthday (chronological, as WHO and the AAP advise) a measurement is read at the age less the weeks born early;
one taken before the term-equivalent age is not read on the term charts at all.

The gestational age at birth comes from a LOINC-coded measurement (the first in the record):
``76516-4`` Gestational age--at birth, ``11884-4`` Gestational age Estimated (the Birth and Fetal Death
Reporting IG), ``49051-6`` Gestational age in weeks, ``18185-9`` Gestational age, ``49052-4`` Gestational age in
days, in weeks or days (UCUM ``wk``, ``d`` or spelt out, or as text: ``28+3``, ``28 3/7``, read by the FHIR and CSV
readers into days, ``datasets.emr_records.gestation_text_days``); else from an ICD-10-CM code that names the completed
weeks (``P07.21``-``P07.26``: under 23 to 27 weeks, ``P07.31``-``P07.39``: 28 to 36). WHO ICD-10's ``P07.2`` and
``P07.3`` (under 28, 28-36 weeks) name no week and correct nothing. A child born at 37 weeks or later is read by
chronological age.
"""

from __future__ import annotations

from datasets.emr_records import GESTATION_CODES, CodedFact, DroppedEntry, Measurement
from screening.icd10_map import normalise_icd10

__all__ = [
    "GESTATION_LOINC",
    "CORRECTED_UNTIL_DAYS",
    "gestation_days",
    "gestation_of_code",
    "correction_days",
    "chart_age",
    "chronological_age",
]

GESTATION_LOINC = GESTATION_CODES
CORRECTED_UNTIL_DAYS = 731  # the second birthday
TERM_DAYS = 280  # 40 weeks
PRETERM_BELOW_DAYS = 259  # 37 completed weeks
_PLAUSIBLE_DAYS = (22 * 7, 45 * 7)
_UNIT_DAYS = {"wk": 7.0, "week": 7.0, "weeks": 7.0, "wks": 7.0, "d": 1.0, "day": 1.0, "days": 1.0}
# ICD-10-CM's completed weeks: P07.21 "extreme immaturity, less than 23 completed weeks" read as 22.
_ICD10CM_WEEKS = {f"P07.2{k}": 21 + k for k in range(1, 7)} | {f"P07.3{k}": 27 + k for k in range(1, 10)}


def gestation_days(m: Measurement) -> tuple[int | None, DroppedEntry | None]:
    """A gestational-age measurement in days, or why it cannot be read (a unit that is not a time, a value outside
    22-45 weeks): listed as unread, and the child's growth read by chronological age."""
    factor = _UNIT_DAYS.get(m.unit.strip().lower())
    if factor is None:
        return None, DroppedEntry(f"LOINC {m.loinc}", f"gestational age in {m.unit[:20]!r}: not weeks (wk) or days (d)")
    days = m.value * factor
    if not _PLAUSIBLE_DAYS[0] <= days <= _PLAUSIBLE_DAYS[1]:
        return None, DroppedEntry(f"LOINC {m.loinc}", f"gestational age {m.value:g} {m.unit.strip()}: not 22-45 weeks")
    return int(days), None


def gestation_of_code(fact: CodedFact) -> int | None:
    """The gestational age in days an ICD-10-CM prematurity code names (its completed weeks), else None."""
    if fact.system != "icd10" or fact.refuted or not fact.code[:3].upper() == "P07":
        return None
    weeks = _ICD10CM_WEEKS.get(normalise_icd10(fact.code))
    return None if weeks is None else weeks * 7


def correction_days(gestation: int | None) -> int:
    """Days born early (0 at term or when the gestational age is not known)."""
    return 0 if gestation is None or gestation >= PRETERM_BELOW_DAYS else TERM_DAYS - gestation


def chart_age(when: int, correction: int) -> int:
    """The age a measurement taken at ``when`` days is read at on the charts; negative: before term-equivalent age."""
    return when - correction if when < CORRECTED_UNTIL_DAYS else when


def chronological_age(age: int, correction: int) -> int:
    """:func:`chart_age` undone (it keeps the order of ages: the corrected ages end below the second birthday)."""
    return age + correction if age < CORRECTED_UNTIL_DAYS - correction else age
