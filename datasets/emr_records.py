"""Typed records of a child's EMR extract, the contract between the EMR readers and ``screening/``.

A reader yields one :class:`ChildRecord` per child, or a :class:`RecordError` naming the record it
could not read and why; one bad record never stops a batch.

The incomplete-record contract: an entry that belongs to a known child but cannot be read (a Condition
with a broken date, a diagnosis row with an unknown code system) is not silently dropped and not only
reported beside the batch: the reader lists it on the child's record as a :class:`DroppedEntry`, and a
record with dropped entries is ``incomplete`` (the screener reports it as such, with the list, and never
as "screened, nothing found"). A missing file or column of an extract is an :class:`ExtractError`
(``datasets/errors.py``) that stops the batch with its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, NamedTuple

__all__ = [
    "CodedFact",
    "Measurement",
    "measurement",
    "ChildRecord",
    "DroppedEntry",
    "DECEASED_UNDATED",
    "RecordError",
    "FactKind",
    "CODE_SYSTEMS",
    "code_system",
    "Sex",
    "sex_of",
    "GESTATION_AT_BIRTH",
    "GESTATION_CODES",
    "gestation_text_days",
    "decimal_text",
    "bound_unread",
]

FactKind = Literal["condition", "procedure", "encounter", "medication"]
Sex = Literal["M", "F", "U"]
# LOINC "Gestational age--at birth": how a record states the weeks a child was born at (screening/gestation.py)
GESTATION_AT_BIRTH = "76516-4"
# Every LOINC code a gestational age at birth is written under: 11884-4 Gestational age Estimated (the Birth and
# Fetal Death Reporting IG), 49051-6 Gestational age in weeks, 18185-9 Gestational age, 49052-4 ... in days.
GESTATION_CODES = frozenset({GESTATION_AT_BIRTH, "11884-4", "49051-6", "18185-9", "49052-4"})
# A gestational age written as text: weeks as a decimal ("28", "28.5", "28,5"), or weeks and days in the
# notations obstetric records use: "28+3" (European records), "28 3/7" (American), "28w3d", "28 weeks 3 days",
# "28 SSW + 3 d", "28 Wochen" (German). Days are 0-6; anything else is not guessed at.
_GESTATION_TEXT = re.compile(
    r"([0-9]{2}(?:[.,][0-9]+)?)\s*(?:weeks?|wochen|wks?|w|ssw|sw)?\.?"
    r"(?:\s*\+\s*([0-6])(?:\s*(?:days?|d|t|tage?)\.?)?|\s+([0-6])\s*/\s*7|\s*(?:and\s+)?([0-6])\s*(?:days?|d|t|tage?)\.?)?",
    re.IGNORECASE,
)

# FHIR system URIs (and the short names the CSV extract uses) -> our short names. ``code_system`` also
# reads them as other writers spell them: http or https, any case, with a trailing slash, or as the HL7
# OIDs (``urn:oid:2.16.840.1.113883.6.*``) that CDA-derived extracts carry.
CODE_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10": "icd10",
    "http://hl7.org/fhir/sid/icd-10-cm": "icd10",
    "http://fhir.de/CodeSystem/bfarm/icd-10-gm": "icd10",  # national modifications keep the WHO codes
    "http://fhir.de/CodeSystem/dimdi/icd-10-gm": "icd10",
    "urn:oid:2.16.840.1.113883.6.3": "icd10",
    "urn:oid:2.16.840.1.113883.6.90": "icd10",
    "urn:oid:1.2.643.5.1.13.13.11.1005": "icd10",  # ICD-10 as registered by the Russian NSI
    "icd10": "icd10",
    "icd-10": "icd10",
    "icd-10-cm": "icd10",
    "icd10cm": "icd10",
    "icd-10-gm": "icd10",
    "http://snomed.info/sct": "snomed",
    "urn:oid:2.16.840.1.113883.6.96": "snomed",
    "snomed": "snomed",
    "sct": "snomed",
    "snomedct": "snomed",
    "snomed-ct": "snomed",
    "snomed ct": "snomed",
    "http://purl.obolibrary.org/obo/hp.owl": "hpo",
    "http://purl.obolibrary.org/obo/hp": "hpo",
    "http://human-phenotype-ontology.org": "hpo",
    "http://www.human-phenotype-ontology.org": "hpo",
    "https://hpo.jax.org": "hpo",
    "https://hpo.jax.org/app": "hpo",
    "hpo": "hpo",
    "hp": "hpo",
    "http://loinc.org": "loinc",
    "urn:oid:2.16.840.1.113883.6.1": "loinc",
    "loinc": "loinc",
    "http://www.whocc.no/atc": "atc",
    "urn:oid:2.16.840.1.113883.6.73": "atc",
    "atc": "atc",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": "actcode",
    # Rare-disease codes a diagnosis may be recorded in (ORPHAcodes are required beside ICD-10-GM in German
    # hospitals and recorded in French ones; OMIM in genetics departments): a diagnosis, never a finding.
    "http://www.orpha.net": "orpha",
    "http://orpha.net": "orpha",
    "http://www.orphadata.com": "orpha",
    "orpha": "orpha",
    "orphacode": "orpha",
    "orphanet": "orpha",
    # ICD-11 (MMS): read for recorded rare-disease diagnoses only (Orphanet maps them); no map to findings exists.
    "http://id.who.int/icd/release/11/mms": "icd11",
    "http://id.who.int/icd11/mms": "icd11",
    "http://id.who.int/icd/release/11": "icd11",
    "icd11": "icd11",
    "icd-11": "icd11",
    "icd-11-mms": "icd11",
    "http://www.omim.org": "omim",
    "http://omim.org": "omim",
    "urn:oid:2.16.840.1.113883.6.174": "omim",
    "omim": "omim",
    "mim": "omim",
}


def _spelling(uri: str) -> str:
    """The form two spellings of one system URI share: lower case, http, no trailing slash."""
    key = uri.strip().lower().rstrip("/")
    return "http://" + key[8:] if key.startswith("https://") else key


_BY_SPELLING = {_spelling(uri): short for uri, short in CODE_SYSTEMS.items()}


def code_system(uri: str | None) -> str:
    """Our short name of a coding system, ``other`` when unknown."""
    if not uri:
        return "other"
    return CODE_SYSTEMS.get(uri) or _BY_SPELLING.get(_spelling(uri), "other")


# A child's sex as extracts write it: FHIR's administrative gender, its first letters, ISO/IEC 5218 numbers
# (1 male, 2 female, 0 not known, 9 not applicable) and German records' m/w/d (weiblich, divers). Only male and
# female name a growth chart; every other value the table knows is "not known" (U).
_SEXES: dict[str, Sex] = {
    "male": "M", "m": "M", "1": "M", "männlich": "M", "maennlich": "M",
    "female": "F", "f": "F", "2": "F", "w": "F", "weiblich": "F",
    "unknown": "U", "u": "U", "0": "U", "9": "U", "other": "U", "o": "U", "x": "U", "d": "U", "divers": "U",
    "unk": "U", "not known": "U", "not applicable": "U",
}


def gestation_text_days(text: str) -> int | None:
    """The days of a gestational age at birth written as text (:data:`_GESTATION_TEXT`), or None."""
    found = _GESTATION_TEXT.fullmatch(text.strip())
    if found is None:
        return None
    days = found[2] or found[3] or found[4] or "0"
    return round(float(found[1].replace(",", ".")) * 7) + int(days)


def sex_of(value: str | None, field: str) -> tuple[Sex, str]:
    """The child's sex from an extract's value, and "" or why it could not be read.

    An empty value is "not known" (U). A value the table does not know is U too, with a reason for the record's
    unread entries: it was read as "U" silently, and a child of unknown sex has its growth read on both charts
    (``screening.growth``), so a German extract's "w" lost every girl's growth chart without a word.
    """
    text = (value or "").strip()
    sex = _SEXES.get(text.lower())
    if sex is not None or not text:
        return sex or "U", ""
    return "U", (
        f"{field} {text[:20]!r} is not male, female, other or unknown (nor M/F/U, 1/2/0/9 or m/w/d): "
        "read as not known"
    )


@dataclass(frozen=True)
class CodedFact:
    """A coded entry: a diagnosis, a procedure, an encounter's type or a prescribed drug."""

    kind: FactKind
    system: str
    code: str
    date: date | None
    refuted: bool = False  # verificationStatus refuted / excluded finding
    # verificationStatus unconfirmed, provisional or differential: suspected. A suspected rare disease is no
    # diagnosis, so it does not take the child out of screening as "already diagnosed".
    unconfirmed: bool = False
    # A Condition's name as written (the coding's display, else the concept's text): what a diagnosis coded in a
    # system without a map (SNOMED CT) is read by. Empty for other kinds and where none is written.
    display: str = ""
    # A Condition dated by the child's age at onset (``onsetAge``) instead of a date: that age in days.
    onset_days: int | None = None


class Measurement(NamedTuple):
    """An observation with a LOINC code and a numeric value (growth, labs). A named tuple (immutable, as
    the records' other entries): readers make ~19 a child, and a tuple is made in a third of the time
    of a frozen dataclass, whose ``__init__`` sets each field through ``object.__setattr__``."""

    loinc: str
    value: float
    unit: str
    date: date


_new_tuple = tuple.__new__

# Patient.deceasedBoolean true (or a CSV death_date of "yes"): deceased, when unknown, so before any screening date.
DECEASED_UNDATED = date.min


_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOUND_TEXT = re.compile(r"(<=|>=|<|>)\s*(" + _DECIMAL_TEXT.pattern + ")")


def bound_unread(comparator: str, value: object, unit: str) -> str:
    """Why a value given as a bound (a Quantity's ``comparator``, a CSV value ``>10``) is not read: a laboratory's
    "beyond the measuring range" says on which side of the bound the value lies, not on which side of a
    screening line, so it is listed (the child ``incomplete``) rather than read as the bound itself (a TSH of
    ">10" read as 10 is no raised TSH)."""
    return f"{comparator}{value} {unit}".strip() + ": a bound, not a measured value"


def decimal_text(text: str) -> float:
    """A measured value written as text (``"12.5"``, ``"1e3"``) as a finite number; ValueError for anything else.
    ``float()`` alone takes "NaN", "inf" and "1_0": a NaN weight had vanished without a word and an "Infinity"
    TSH had been a raised TSH."""
    stripped = text.strip()
    if not _DECIMAL_TEXT.fullmatch(stripped):
        if bound := _BOUND_TEXT.fullmatch(stripped):
            raise ValueError(bound_unread(bound.group(1), bound.group(2), ""))
        raise ValueError(f"{text[:30]!r} is not a number")
    value = float(stripped)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:30]!r} is beyond any measurement")
    return value


def measurement(loinc: str, value: float, unit: str, when: date) -> Measurement:
    """``Measurement(loinc, value, unit, when)``, the same object, for a reader that makes millions
    (``tuple.__new__`` directly: the named tuple's own ``__new__`` is a Python function)."""
    return _new_tuple(Measurement, (loinc, value, unit, when))  # type: ignore[no-any-return]


NUL_NOT_READ = "holds a NUL character (0x00): not read"


@dataclass(frozen=True)
class DroppedEntry:
    """An entry of a child's record that could not be read; ``entry`` names it (file:line, Resource/id)."""

    entry: str
    reason: str
    # What the entry may still say though it cannot be read as a finding (a Condition in a code system not read:
    # its ICD-11 codes and its name, ``datasets.fhir_entry_rules.Unreadable.facts``): the readers add these to the
    # record of the Patient it names, once that Patient is found.
    facts: tuple[CodedFact, ...] = ()


@dataclass
class ChildRecord:
    patient_id: str
    birth_date: date
    sex: Sex
    facts: list[CodedFact] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    source: str = ""
    dropped: list[DroppedEntry] = field(default_factory=list)
    # For the paediatrician's page only (never logged): the name, the hospital's record number, and
    # whose patient the child is (FHIR Patient.generalPractitioner / managingOrganization references).
    name: str = ""
    mrn: str = ""
    practitioner: str = ""
    organization: str = ""
    # A record of a child who has died (FHIR Patient.deceased[x], the CSV's death_date) or that is not in use
    # (Patient.active false, a Patient.link replaced-by: a merged record) is never screened: a flag would ask a
    # paediatrician to contact the family of a child who has died, or duplicate the surviving record's flag.
    # ``deceased``: the date of death, ``DECEASED_UNDATED`` when the record says so without a date.
    deceased: date | None = None
    inactive: str = ""  # why the record is not in use; "" when it is

    def __post_init__(self) -> None:
        # A NUL (0x00) is no character of FHIR's string or of a CSV's text, and PostgreSQL text cannot hold one
        # (the result had failed to store: a 500, or screen-emr's traceback after its flags file). Every reader
        # makes a ChildRecord, so it is handled here once. In the name, shown only, it means nothing and is
        # removed. The record number and the care-team references identify: without the NUL they could name
        # another record or another clinician's patients, so such a value is not read (the record incomplete,
        # the entry saying why), as other unreadable entries.
        self.name = self.name.replace("\x00", "")
        for element in ("mrn", "practitioner", "organization"):
            if "\x00" in getattr(self, element):
                setattr(self, element, "")
                self.dropped.append(DroppedEntry(f"Patient/{self.patient_id} {element}", NUL_NOT_READ))

    @property
    def incomplete(self) -> bool:
        """Some entries of this record could not be read (see :attr:`dropped`)."""
        return bool(self.dropped)


@dataclass(frozen=True)
class RecordError:
    """A record that could not be read; ``record`` names it (file:line, Resource/id), never the patient."""

    source: str
    record: str
    reason: str
