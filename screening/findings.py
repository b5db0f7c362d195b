"""From a child's EMR record to dated HPO findings (``ChildFindings``): the code maps, growth z-scores,
lab thresholds, the age gate and the exclusions (already diagnosed, already in genetics care).

Codes: ICD-10 through the curated table (``screening/icd10_map.py``), SNOMED CT through the xrefs
of ``hp.obo``, HPO as given, LOINC growth and lab codes through ``screening/data/loinc_findings.tsv``.
Codes revealing an existing suspicion (``screening/data/suspicion_codes.tsv``) are never findings. A recorded
rare-disease diagnosis (``screening/orphanet.py``) by its ICD-10, ICD-11, ORPHA or OMIM code, or, where no map
holds the code (SNOMED CT, a code system not read), by its name.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal, NamedTuple

from datasets.emr_records import DECEASED_UNDATED, ChildRecord, CodedFact, DroppedEntry, Measurement
from datasets.fhir_entry_rules import MONTH_ONLY_BIRTH
from screening.gestation import (
    GESTATION_LOINC,
    chart_age,
    chronological_age,
    correction_days,
    gestation_days,
    gestation_of_code,
)
from screening.growth import GrowthFinding, GrowthStandards, Implausible, growth_findings, load_growth_standards
from screening.icd10_map import Icd10Map, load_icd10_map, normalise_icd10
from screening.ontology import Ontology
from screening.orphanet import OrphanDiagnoses, load_orphan_diagnoses

__all__ = [
    "Finding",
    "ChildFindings",
    "CodeMaps",
    "LabRule",
    "load_code_maps",
    "extract_findings",
    "coded_findings",
    "growth_finding",
    "unit_factor",
    "growth_unread",
    "lab_factor",
    "lab_unread",
    "lab_source",
    "Status",
    "SCORED_STATUSES",
    "MAX_AGE_DAYS",
    "age_limit_days",
]

_DATA = Path(str(resources.files("screening") / "data"))
MAX_AGE_DAYS = int(7 * 365.25)

# ``incomplete``: screened on what could be read, with entries of the record that could not (listed).
Status = Literal["screened", "incomplete", "out_of_age", "already_diagnosed", "in_genetics_care", "deceased", "inactive_record"]
SCORED_STATUSES = ("screened", "incomplete")
# A child who has died, or a record no longer in use (merged): not screened, and the result is stored so that it
# retires the child's earlier undecided flag from the paediatrician's page (``screening.api``).
RETIRING_STATUSES = ("deceased", "inactive_record")


@dataclass(frozen=True)
class Finding:
    hpo: str
    age_days: int | None
    source: str  # "icd10:Q21.0", "growth:lhfa z=-2.6", "loinc:718-7", "snomed:...", "hpo"
    excluded: bool = False


@dataclass
class ChildFindings:
    patient_id: str
    sex: str
    age_days: int
    status: Status
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    growth_z: dict[str, float] = field(default_factory=dict)  # lowest z per indicator
    congenital_codes: int = 0  # ICD-10 chapter Q codes
    # HPO ids the ontology does not know (a newer HPO release, a typo): read as nothing, and said so
    unread: list[DroppedEntry] = field(default_factory=list)
    # Gestational age at birth in days, where the record says it (screening/gestation.py): growth at corrected age
    gestation_days: int | None = None

    @property
    def present(self) -> set[str]:
        return {f.hpo for f in self.findings if not f.excluded}

    @property
    def absent(self) -> set[str]:
        return {f.hpo for f in self.findings if f.excluded} - self.present


@dataclass(frozen=True)
class LabRule:
    loinc: str
    kind: str
    low_below: float | None
    low_hpo: str | None
    high_above: float | None
    high_hpo: str | None
    unit: str = ""  # the unit the lines are in (UCUM)
    from_day: int = 0  # the age in days from which the lines hold (the first days of life are transitional)
    early_line: float | None = None  # before from_day only a value beyond it is a finding (None: no value is)

    def lines(self, age_days: int) -> tuple[float | None, float | None]:
        """(low line, high line) at ``age_days``: a finding below the first or above the second; a line without
        its HPO term is None. In the first days the early line stands in the place of the rule's one line."""
        low = self.low_below if self.low_hpo else None
        high = self.high_above if self.high_hpo else None
        if age_days >= self.from_day:
            return low, high
        if self.early_line is None:
            return None, None
        return (self.early_line, None) if low is not None else (None, self.early_line)


class CodeMeaning(NamedTuple):
    """What one coded fact means for screening, the same for every child who has the code."""

    category: str | None  # suspicion_of: genetic_test, genetics_visit, specific_drug
    orphan: tuple[str, str] | None  # a Condition recording a diagnosed orphan disease (by code, or by name: module doc)
    congenital: bool  # an ICD-10 condition of chapter Q
    hpo: tuple[str, ...]  # to_hpo
    source: str  # "icd10:Q21.0", as a Finding names it


# Rare-disease code systems a Condition records a diagnosis in, each with the prefixes its codes are written with.
_RARE_CODES = {
    "orpha": ("ORPHA", re.compile(r"(?i)(?:orpha(?:net)?[:_ ]?)?\s*([0-9]{1,7})")),
    "omim": ("OMIM", re.compile(r"(?i)(?:o?mim[:_ #]?|#)?\s*([0-9]{1,7})")),
}


def _rare_disease_code(system: str, code: str) -> tuple[str, str] | None:
    """(ORPHA:n or OMIM:n, why) for a Condition coded with an ORPHAcode or an OMIM number, however prefixed
    (``870``, ``ORPHA:870``, ``Orphanet_870``, ``#190685``); None for other systems or a code that is no number."""
    if system not in _RARE_CODES:
        return None
    prefix, pattern = _RARE_CODES[system]
    match = pattern.fullmatch(code.strip())
    return None if match is None else (f"{prefix}:{int(match.group(1))}", "recorded as a diagnosis")


# Conditions read by their name (the coding's display, else the text) where the code itself names no diagnosis:
# SNOMED CT (no map to rare diseases), ICD-11 codes Orphanet maps to nothing or to more than diagnoses, and the
# entries of code systems not read (``name``: ``datasets.fhir_entry_rules.Unreadable.facts``).
_NAMED_SYSTEMS = frozenset({"snomed", "icd11", "name"})

# Distinct codes remembered by CodeMaps.meaning; a population repeats a few thousand, the bound only
# keeps an extract of junk codes from growing the memory of a long run.
_MEANINGS_KEPT = 200_000


class CodeMaps:
    """Everything that turns codes into findings; built once and shared (read-only but for the memo
    of :meth:`meaning`, which only ever holds what the tables say)."""

    def __init__(
        self,
        ontology: Ontology,
        icd10: Icd10Map,
        orphan: OrphanDiagnoses,
        growth: GrowthStandards,
        loinc: dict[str, LabRule],
        suspicion: list[tuple[str, str, str]],
    ) -> None:
        self.ontology = ontology
        self.icd10 = icd10
        self.orphan = orphan
        self.growth = growth
        self.loinc = loinc
        self.suspicion = suspicion
        # per system: (all prefixes as one tuple for a fast first test, then (category, prefix) pairs)
        by_system: dict[str, list[tuple[str, str]]] = {}
        for category, system, prefix in suspicion:
            by_system.setdefault(system, []).append((category, prefix if system == "icd10" else prefix.lower()))
        self._suspicion_by_system = {s: (tuple(p for _, p in pairs), pairs) for s, pairs in by_system.items()}
        self._meanings: dict[tuple[bool, str, str, str], CodeMeaning] = {}
        self._lab_meanings: dict[str, tuple[bool, LabRule | None]] = {}

    def meaning(self, kind: str, system: str, code: str, display: str = "") -> CodeMeaning:
        """The code's suspicion category, orphan diagnosis, chapter Q and HPO terms, worked out once per
        distinct code (normalising and prefix-matching each of a population's millions of facts was a
        quarter of the screening time). A Condition of ``_NAMED_SYSTEMS`` whose code maps to no phenotype and
        no diagnosis is one when its ``display`` names one (``OrphanDiagnoses.lookup_name``)."""
        named = display if kind == "condition" and system in _NAMED_SYSTEMS else ""
        key = (kind == "condition", system, code, named)
        found = self._meanings.get(key)
        if found is None:
            if len(self._meanings) >= _MEANINGS_KEPT:
                self._meanings.clear()
            icd10_condition = system == "icd10" and kind == "condition"
            hpo = tuple(self.to_hpo(CodedFact(kind, system, code, None)))  # type: ignore[arg-type]
            orphan = (
                self.orphan.lookup(code) if icd10_condition
                else self.orphan.lookup_icd11(code) if system == "icd11" and kind == "condition"
                else _rare_disease_code(system, code) if kind == "condition" else None
            )
            if named and not hpo and orphan is None:
                by_name = self.orphan.lookup_name(named)
                if by_name is not None:
                    where = {"snomed": f"SNOMED CT {code[:20]}", "icd11": f"ICD-11 {code[:20]}"}.get(system, "an entry in a code system not read")
                    orphan = (by_name[0], f"{by_name[1]} (named by {where} {named[:60]!r})")
            found = CodeMeaning(
                self.suspicion_of(system, code, kind),
                orphan,
                icd10_condition and normalise_icd10(code).startswith("Q"),
                hpo,
                f"{system}:{code}",
            )
            self._meanings[key] = found
        return found

    def lab_meaning(self, loinc: str) -> tuple[bool, LabRule | None]:
        """Whether a LOINC code reveals a genetic test, and its growth/lab rule; once per distinct code."""
        found = self._lab_meanings.get(loinc)
        if found is None:
            if len(self._lab_meanings) >= _MEANINGS_KEPT:
                self._lab_meanings.clear()
            found = (self.suspicion_of("loinc", loinc) is not None, self.loinc.get(loinc))
            self._lab_meanings[loinc] = found
        return found

    def to_hpo(self, fact: CodedFact) -> list[str]:
        if fact.kind != "condition":
            return []
        if fact.system == "icd10":
            return self.icd10.lookup(fact.code)
        if fact.system == "snomed":
            return list(self.ontology.snomed_to_hpo.get(fact.code, []))
        if fact.system == "hpo":
            primary = self.ontology.primary(fact.code)
            return [primary] if primary and self.ontology.is_phenotype(primary) else []
        return []

    def suspicion_of(self, system: str, code: str, kind: str = "") -> str | None:
        """``genetic_test``, ``genetics_visit`` or ``specific_drug`` when the code reveals one."""
        prefixes = self._suspicion_by_system.get(system)
        if not prefixes:
            return None
        normal = normalise_icd10(code) if system == "icd10" else code.strip().lower()
        if not normal.startswith(prefixes[0]):
            return None
        for category, prefix in prefixes[1]:
            if normal.startswith(prefix):
                return category
        return None


def _read_tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as handle:
        return [row for row in csv.reader((ln for ln in handle if not ln.startswith("#")), delimiter="\t") if row]


def load_code_maps(ontology: Ontology) -> CodeMaps:
    loinc = {}
    for row in _read_tsv(_DATA / "loinc_findings.tsv"):
        row += [""] * (10 - len(row))
        rule = LabRule(
            row[0],
            row[1],
            float(row[4]) if row[4] else None,
            row[5] or None,
            float(row[6]) if row[6] else None,
            row[7] or None,
            row[3],
            int(row[8] or 0),
            float(row[9]) if row[9] else None,
        )
        if rule.early_line is not None and (rule.from_day <= 0 or (rule.low_hpo is None) == (rule.high_hpo is None)):
            raise ValueError(f"loinc_findings.tsv {row[0]}: an early line needs a from_day and exactly one line")
        loinc[row[0]] = rule
    suspicion = [(r[0], r[1], r[2]) for r in _read_tsv(_DATA / "suspicion_codes.tsv")]
    return CodeMaps(ontology, load_icd10_map(), load_orphan_diagnoses(), load_growth_standards(), loinc, suspicion)


# LOINC length lying / height standing (WHO: lying before 2 years, standing after).
LYING_LENGTH, STANDING_HEIGHT = "8306-3", "8308-9"
# UCUM codes and the plain spellings writers use, to cm (lengths) and kg (weights): a weight of 22 "lb" read as
# kg made a toddler obese, and 3,200 "grams" a newborn of 3,200 kg.
_LENGTH_UNITS = {
    "cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54, "[in_us]": 2.54, "in": 2.54, "inch": 2.54, "inches": 2.54,
    "centimeter": 1.0, "centimeters": 1.0, "centimetre": 1.0, "centimetres": 1.0, "meter": 100.0, "metre": 100.0,
}
_WEIGHT_UNITS = {
    "kg": 1.0, "kgs": 1.0, "kilogram": 1.0, "kilograms": 1.0, "g": 0.001, "gm": 0.001, "gram": 0.001, "grams": 0.001,
    "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237, "pound": 0.45359237, "pounds": 0.45359237,  # by definition
    "[oz_av]": 0.028349523125, "oz": 0.028349523125,
}


def extract_findings(record: ChildRecord, maps: CodeMaps, as_of: date, max_age_days: int = MAX_AGE_DAYS) -> ChildFindings:
    """The child's findings up to ``as_of``; the status says whether the child is screened at all.
    (:func:`screening.findings_batch.extract_findings_batch`: the same for many children at once.)"""
    child, final = coded_findings(record, maps, as_of, max_age_days)
    if final:
        return child
    age, birth = child.age_days, record.birth_date
    slack = birth_slack(record)
    for m in record.measurements:  # the first gestational age recorded, else the one a code names
        if m.loinc in GESTATION_LOINC and m.date is not None and 0 <= measured_at(m.date, birth, slack) <= age:
            days, unread = gestation_days(m)
            if unread is not None:
                child.unread.append(unread)
            else:
                child.gestation_days = days
            break
    correction = correction_days(child.gestation_days)
    measurements: list[tuple[str, int, float]] = []
    coded: dict[tuple[str, date, float, str], str] = {}  # a growth value -> the LOINC code it was first read under
    for m in record.measurements:
        if m.date is None:
            continue
        when = measured_at(m.date, birth, slack)
        if when > age or m.loinc in GESTATION_LOINC:
            continue
        suspicious, rule = maps.lab_meaning(m.loinc)
        if when < 0:
            if rule is not None:
                child.unread.append(before_birth(m, birth))
            continue
        if suspicious:
            if child.status == "screened":
                child.status, child.reason = "in_genetics_care", "genetic test"
            continue
        if rule is None:
            continue
        if rule.kind.startswith("growth:"):
            indicator = rule.kind.split(":", 1)[1]
            if coded.setdefault((indicator, m.date, m.value, m.unit), m.loinc) != m.loinc:
                continue  # one value coded twice (RECODED_GROWTH)
            factor = unit_factor(indicator, m.unit)
            if factor is None:
                child.unread.append(growth_unread(m.loinc, m.unit))
                continue
            value = m.value * factor
            # WHO length (lying) before 2 years, height (standing) after: the two differ by 0.7 cm.
            if m.loinc == LYING_LENGTH and when >= 731:
                value -= 0.7
            elif m.loinc == STANDING_HEIGHT and when < 731:
                value += 0.7
            at = chart_age(when, correction)
            if at >= 0:  # not before the term-equivalent age: the charts start at a term birth
                measurements.append((indicator, at, value))
        else:
            factor = lab_factor(rule, m.unit)
            if factor is None:
                child.unread.append(lab_unread(rule, m.unit))
                continue
            value = m.value * factor
            low, high = rule.lines(when)  # in the first days, what they make ordinary is no finding
            if low is not None and value < low:
                child.findings.append(Finding(str(rule.low_hpo), when, lab_source(m.loinc, m.value, m.unit, factor)))
            elif high is not None and value > high:
                child.findings.append(Finding(str(rule.high_hpo), when, lab_source(m.loinc, m.value, m.unit, factor)))

    found, child.growth_z, implausible = growth_findings(maps.growth, record.sex, measurements)
    for g in found:
        child.findings.append(growth_finding(g, correction))
    child.unread.extend(implausible_unread(x, correction) for x in implausible)
    return child


# RECODED_GROWTH: an Observation's value coded with two LOINC codes of one measurement (Body weight 29463-7 beside
# Body weight Measured 3141-9, Body height 8302-2 beside Body height --lying 8306-3, as US Core writers add the
# specific code) reaches screening as two measurements of the same day and value. Read as two, a single low value
# "persisted" (two measurements beyond the line) and made a growth finding. Such a value is read once, under its
# first code; the same code twice is left as it was, as the model was trained (screening/simulate.py codes each
# measurement once).

# A lab line is in its rule's unit; values come in other units at other sites. The same unit's spellings:
_SAME_UNIT = {
    "u/l": {"u/l", "iu/l", "[iu]/l"},
    "10*3/ul": {"10*3/ul", "10^3/ul", "k/ul", "x10e3/ul", "10*9/l", "10^9/l", "x10e9/l", "/nl", "thou/ul", "10*3/mm3"},
    "m[iu]/l": {"m[iu]/l", "miu/l", "mu/l", "u[iu]/ml", "uiu/ml"},
    "umol/l": {"umol/l"},
}
_SCALED_UNIT = {("g/dl", "g/l"): 0.1, ("mg/dl", "mg/l"): 0.1, ("g/dl", "mg/dl"): 0.001}
# mg/dL (g/dL for haemoglobin) per mmol/L of the substance: glucose, calcium, cholesterol, haemoglobin (as the
# Netherlands reports it). Calcium in mmol/L (2.4) read as mg/dL had been "hypocalcaemia" for every child.
_MOLAR_MASS = {"2345-7": 18.016, "15074-8": 18.016, "17861-6": 4.008, "2093-3": 38.67, "718-7": 1.611}


def lab_factor(rule: LabRule, unit: str) -> float | None:
    """What a value in ``unit`` is multiplied by to be in the rule's unit; None when it cannot be (an empty
    unit is taken as the rule's, as the growth units are)."""
    given = unit.strip().lower().replace("\u00b5", "u").replace("\u03bc", "u")  # micro sign, Greek mu
    target = rule.unit.lower()
    if not given or given == target or given in _SAME_UNIT.get(target, ()):
        return 1.0
    if (target, given) in _SCALED_UNIT:
        return _SCALED_UNIT[(target, given)]
    molar = _MOLAR_MASS.get(rule.loinc)
    if molar is not None and given == "mmol/l" and target in ("mg/dl", "g/dl"):
        return molar
    if molar is not None and given == "mg/dl" and target == "mmol/l":
        return 1.0 / molar
    return None


def lab_unread(rule: LabRule, unit: str) -> DroppedEntry:
    return DroppedEntry(f"LOINC {rule.loinc}", f"unit {unit[:20]!r}: not convertible to {rule.unit}")


def lab_source(loinc: str, value: float, unit: str, factor: float) -> str:
    """The finding's source: the value as recorded, with its unit when it was converted."""
    return f"loinc:{loinc}={value:g}" + (f" {unit.strip()}" if factor != 1.0 else "")


def growth_finding(g: GrowthFinding, correction: int = 0) -> Finding:
    """The finding of a growth z, dated by the child's age (``correction``: days born early, the z read at corrected
    age)."""
    when = chronological_age(g.age_days, correction)
    corrected = f" at corrected age (born {correction // 7} weeks early)" if when != g.age_days else ""
    return Finding(g.hpo, when, f"growth:{g.indicator} z={g.z:.1f}{corrected}")


# A birth date given to the month is read as the 15th (datasets/fhir_entry_rules.py): a measurement in the first
# half of that month (birth weight and length) is taken at birth, not as dated before it.
BIRTH_MONTH_SLACK = 15


def birth_slack(record: ChildRecord) -> int:
    """How many days before the recorded birth date a measurement is still taken at birth."""
    return BIRTH_MONTH_SLACK if any(d.reason == MONTH_ONLY_BIRTH for d in record.dropped) else 0


def measured_at(when: date, birth: date, slack: int) -> int:
    """The child's age in days at a measurement (0 within ``slack`` days before the birth date)."""
    days = (when - birth).days
    return 0 if -slack <= days < 0 else days


def before_birth(m: Measurement, birth: date) -> DroppedEntry:
    """A growth or lab value dated before the child's birth, listed: skipped without a word, it hid a birth date
    or a measurement date that is wrong (and with a wrong birth date every z-score is)."""
    return DroppedEntry(f"LOINC {m.loinc}", f"dated {m.date.isoformat()}, before the birth date {birth.isoformat()}: not read")


_MEASURED = {"lhfa": ("length/height", "cm"), "hcfa": ("head circumference", "cm"), "wfa": ("weight", "kg")}


def implausible_unread(x: Implausible, correction: int = 0) -> DroppedEntry:
    """A growth value beyond WHO's 6 SD, listed: it had been dropped without a word (a weight in grams without its
    unit lost every weight of the child); it may also be a child to look at (primordial dwarfism lies near -8 SD)."""
    what, unit = _MEASURED[x.indicator]
    return DroppedEntry(
        f"growth {what} at day {chronological_age(x.age_days, correction)}",
        f"{x.value:g} {unit} lies {x.z:+.1f} SD from the WHO median, beyond the 6 SD of a plausible value: "
        "a unit or typing error, or a measurement to check; not read",
    )


def unit_factor(indicator: str, unit: str) -> float | None:
    """To cm for a length or head circumference, to kg for a weight (``indicator`` wfa); a value without a
    unit is taken as already in them, and None for a unit of another kind or one not known (listed as unread)."""
    if not unit or not unit.strip():
        return 1.0
    return (_WEIGHT_UNITS if indicator == "wfa" else _LENGTH_UNITS).get(unit.strip().lower())


def growth_unread(loinc: str, unit: str) -> DroppedEntry:
    return DroppedEntry(f"LOINC {loinc}", f"unit {unit[:20]!r}: not a unit of this measurement")


# A diagnosis dated before birth is prenatal; one dated earlier than a pregnancy lasts has no date of the child's
# (EHRs write 1900-01-01 for an unknown onset): such a finding is read undated, where it had shown an age of -121 years.
_PREGNANCY_DAYS = 300


def age_limit_days(birth: date, max_age_days: int) -> int:
    """Days from ``birth`` to the end of the age range: for a whole number of years (7 years arrive as
    ``int(7 * 365.25)`` days) the day of that birthday, as the calendar has it (born on 29 February: 1 March);
    otherwise the days given. Counted in days alone, a child was "older than 7" on the day before the 7th birthday
    whenever two 29 Februaries fell in the seven years."""
    years = round(max_age_days / 365.25)
    if years <= 0 or abs(max_age_days - years * 365.25) >= 1 or birth.year + years > date.max.year:
        return max_age_days
    try:
        birthday = birth.replace(year=birth.year + years)
    except ValueError:  # 29 February in a year without one
        birthday = date(birth.year + years, 3, 1)
    return (birthday - birth).days


def coded_findings(
    record: ChildRecord, maps: CodeMaps, as_of: date, max_age_days: int = MAX_AGE_DAYS
) -> tuple[ChildFindings, bool]:
    """The age gate and the findings of the child's coded facts, and whether the status is final (out
    of age, already diagnosed: the measurements are then not read)."""
    age = (as_of - record.birth_date).days
    child = ChildFindings(record.patient_id, record.sex, age, "screened")
    if record.inactive:
        child.status, child.reason = "inactive_record", record.inactive
        return child, True
    if record.deceased is not None and record.deceased <= as_of:
        child.status, child.reason = "deceased", (
            "recorded as deceased" if record.deceased == DECEASED_UNDATED else f"deceased {record.deceased.isoformat()}"
        )
        return child, True
    if age < 0:
        # Named as what it is, a record to correct (a mistyped birth year) or an extract screened as of a date before
        # the child's birth: "age -35.1 years is outside 0-7" had read as the age rule.
        child.status, child.reason = "out_of_age", (
            f"birth date {record.birth_date.isoformat()} is after the screening date {as_of.isoformat()}"
        )
        return child, True
    if age >= age_limit_days(record.birth_date, max_age_days):
        child.status, child.reason = "out_of_age", f"age {age / 365.25:.1f} years is outside 0-{max_age_days / 365.25:.0f}"
        return child, True

    birth = record.birth_date
    for fact in record.facts:
        if child.gestation_days is None and (weeks_named := gestation_of_code(fact)) is not None:
            child.gestation_days = weeks_named
        when = fact.onset_days if fact.date is None else (fact.date - birth).days
        if when is not None and when < -_PREGNANCY_DAYS:
            when = None  # no date of the child's: a placeholder (1900-01-01) or another person's; the finding stands
        if when is not None and when > age:
            continue  # after the screening date
        meaning = maps.meaning(fact.kind, fact.system, fact.code, fact.display)
        category = meaning.category
        if category == "specific_drug" and not fact.refuted:
            child.status, child.reason = "already_diagnosed", "receives a disease-specific drug"
            return child, True
        if category is not None:
            if not fact.refuted and child.status == "screened":
                child.status, child.reason = "in_genetics_care", category.replace("_", " ")
            continue  # never a feature: it reveals an existing suspicion
        if not fact.refuted and fact.kind == "condition":
            if meaning.orphan is not None:  # ICD-10, ORPHA, OMIM, or a SNOMED CT Condition by its name
                if fact.unconfirmed:
                    continue  # suspected, not diagnosed: the child is screened on the rest of the record
                child.status, child.reason = "already_diagnosed", f"{meaning.orphan[0]} {meaning.orphan[1]}"
                return child, True
            child.congenital_codes += meaning.congenital
        for hpo in meaning.hpo:
            child.findings.append(Finding(hpo, when, meaning.source, excluded=fact.refuted))
        if not meaning.hpo and fact.system == "hpo" and fact.kind == "condition" and maps.ontology.primary(fact.code) is None:
            child.unread.append(DroppedEntry(f"HPO {fact.code[:40]}", "unknown HPO id: not in the HPO release the screener uses"))
        elif fact.system in _RARE_CODES and fact.kind == "condition" and meaning.orphan is None:
            child.unread.append(DroppedEntry(f"{fact.system.upper()} {fact.code[:40]}", "not an ORPHAcode or OMIM number"))
    return child, False
