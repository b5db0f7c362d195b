"""The rules every FHIR reader (full validation, fast, typed Bundle path) follows for the entries that may be
findings: which are features, which cannot be read (listed, never dropped silently), which were withdrawn.

A phenopacket-derived or genetics-clinic export records a feature not as a Condition but as an Observation
coded with an HPO term: HL7's Phenomics Exchange IG (``PhenotypicFeature``: the HPO term in ``code``,
LOINC ``LA9633-4`` "Present" / ``LA9634-2`` "Absent" in ``valueCodeableConcept``) and the Genomics Reporting
IG (an observed phenotype: the HPO term in ``valueCodeableConcept``). Such an Observation is a finding like
an HPO-coded Condition, present or excluded. One whose value says neither (``valueString: "maybe"``) is
not guessed at: the reader lists it as a dropped entry and the record is screened as ``incomplete``.

A Condition none of whose codings is ICD-10, SNOMED CT or HPO (a local code, text only, no code) cannot
be a finding either, and is listed the same way: a child whose diagnoses all came in a local code system
must not look like a child with none. What may still record a diagnosis travels (``Unreadable.facts``): its
ICD-11 codes (Orphanet maps them to rare diseases) and its name (display, else text): a problem list's "Down
syndrome" in a local code records a diagnosis, and the screener reads it as one.

So is a LOINC-coded value without a full date (a growth measurement whose age is unknown).

A gestational age at birth written as text (``valueString`` "28+3", as European profiles write weeks and days,
or "28 3/7") is read as the quantity would be (:func:`gestation_as_text`); one that names no weeks is listed.

A Patient whose ``gender`` is ``other`` or ``unknown`` may still say the sex a growth chart needs: US Core's
``birthsex`` extension (M/F) or HL7's ``patient-sexParameterForClinicalUse`` (``female-typical`` /
``male-typical``), which is meant for exactly this and, where present, decides (:func:`sex_for_growth`).

A birth date given to the month only (``2021-05``, as pseudonymised extracts give it) is read as the 15th, and
the record lists that as an unread entry, so ages are known to be within 15 days; a year alone is too coarse to
screen a child under 7 and stays a record error.

A Patient who has died (``deceasedBoolean`` true, ``deceasedDateTime`` on or before the screening date) or whose
record is not in use (``active`` false, a ``link`` of type ``replaced-by``: a merged record) is read, and not
screened: :func:`patient_standing`.

Entries the writer withdrew (``status`` ``entered-in-error`` or ``cancelled``, a Condition's
``verificationStatus`` ``entered-in-error``) are not read at all: a weight entered in error must not make
a growth finding. A Condition ``unconfirmed``, ``provisional`` or ``differential`` is read as suspected
(``CodedFact.unconfirmed``): its findings count, but a suspected rare disease is no diagnosis.

A Condition dated by the child's age at onset (``onsetAge``, no ``onsetDateTime``) is dated by that age
(``CodedFact.onset_days``: a finding the child had from that age; one with an onset after the screening date is
not yet one); before, it was undated and counted whatever the screening date.

A Condition's name as written (each coding's ``display``, else the concept's ``text``: :func:`condition_displays`)
travels with its codes (``CodedFact.display``): SNOMED CT has no map to rare diseases, so a SNOMED-coded
diagnosis is recognised by its name.

A MedicationRequest may name its drug by reference (``medicationReference``: a ``Medication`` contained in it, or
one elsewhere in the Bundle or export, as Epic and many US Core servers write it): the drug is read from that
Medication's ``code`` (:func:`resolve_medication_references`), and one whose Medication is not in the input is
listed. Before, the drug was not read at all: a child on nusinersen was flagged as an unrecognised rare-disease
suspect, on a complete record.

A resource may name its Patient by identifier instead of by reference (``subject: {"identifier": {system,
value}}``, a logical reference): it is given to the Patient of the input that carries that identifier
(:func:`resolve_subject_identifiers`), and one that names no such Patient is a record error that says so. Before,
it was "has no subject reference", and a syndromic child whose Conditions all named it so was "screened" without
them on a complete record.

A second Patient resource with the id of one already read (a Bulk Data export holding two versions, a Bundle
repeating its Patient) is the same child: the first is read, and one that says another birth date or sex is
listed as an unread entry (:func:`repeated_patient`), so the record is screened as ``incomplete``. Before, the
last one read replaced the first without a word, and with it the child's age. A child in more than one record of
an extract (two Bundles of one patient, an extract appended to) is read as one record, :func:`merged_record`.
Any other resource repeated exactly (same type, id and content) is read once, and so is an entry that a child's
later record repeats: the same measurement read twice had made a single low value "persist" as a growth finding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date
from typing import Any, TypeVar
from urllib.parse import unquote

from datasets.emr_records import (
    DECEASED_UNDATED,
    GESTATION_CODES,
    ChildRecord,
    CodedFact,
    DroppedEntry,
    Measurement,
    Sex,
    gestation_text_days,
)
from datasets.fhir_primitives import reference_key

__all__ = [
    "repeated_patient",
    "merged_record",
    "FINDING_SYSTEMS",
    "OTHER_VALUES",
    "UNDATED",
    "VOID_OBSERVATION_STATUS",
    "VOID_VERIFICATION",
    "UNCONFIRMED",
    "GM_CERTAINTY",
    "condition_certainty",
    "condition_displays",
    "onset_age_days",
    "feature_presence",
    "check_condition_codes",
    "Unreadable",
    "month_only_birth",
    "MONTH_ONLY_BIRTH",
    "no_birth_date",
    "patient_standing",
    "gestation_as_text",
    "sex_for_growth",
    "resolve_medication_references",
    "unresolved_medication",
    "resolve_subject_identifiers",
    "resolve_references",
    "without_repeated_resources",
    "later_pages",
    "unowned_in_bundle",
    "no_subject",
]

VOID_OBSERVATION_STATUS = frozenset({"entered-in-error", "cancelled"})
VOID_VERIFICATION = "entered-in-error"
# Condition verificationStatus codes of a suspicion, not a diagnosis (R4 condition-ver-status).
UNCONFIRMED = frozenset({"unconfirmed", "provisional", "differential"})
# The German profiles (KBV, Medizininformatik-Initiative) say how certain an ICD-10-GM diagnosis is in an
# extension on its coding, not in verificationStatus: A excluded, V suspected, Z status after, G confirmed.
GM_CERTAINTY = "http://fhir.de/StructureDefinition/icd-10-gm-diagnosesicherheit"

# (system, code) of a value or interpretation that says present / absent: LOINC answers LL1937-3 (the
# Phenomics Exchange binding), SNOMED CT Present/Absent and Yes/No, HL7 v2 Y/N, v3 interpretation POS/NEG.
_PRESENT = frozenset({
    ("loinc", "LA9633-4"), ("snomed", "52101004"), ("snomed", "373066001"), ("other", "Y"), ("other", "POS"),
    ("other", "DET"),
})
_ABSENT = frozenset({
    ("loinc", "LA9634-2"), ("snomed", "2667000"), ("snomed", "373067005"), ("other", "N"), ("other", "NEG"),
    ("other", "ND"),
})
_PRESENT_WORDS = frozenset({"present", "yes", "true", "positive", "observed"})
_ABSENT_WORDS = frozenset({"absent", "no", "false", "negative", "excluded", "not observed"})


# A Condition is read when one of its codings is in one of these: a finding (ICD-10, SNOMED CT, HPO) or a
# recorded rare-disease diagnosis (ORPHAcode, OMIM).
FINDING_SYSTEMS = frozenset({"icd10", "snomed", "hpo", "orpha", "omim"})
# A LOINC-coded value without a full date (effective[x], else issued): its age, so its growth centile, is unknown.
UNDATED = "effective[x]: a measured value without a full date"


# Value elements of other types, which cannot say whether a feature is present.
OTHER_VALUES = ("valueInteger", "valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")


MONTH_ONLY_BIRTH = "birthDate: month only, read as the 15th (ages within 15 days)"
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def month_only_birth(value: Any) -> date | None:
    """The 15th of the month of a birth date given to the month (``2021-05``); None for anything else."""
    match = _MONTH.fullmatch(value) if isinstance(value, str) else None
    return date(int(match.group(1)), int(match.group(2)), 15) if match else None


def repeated_patient(first: ChildRecord, birth: date, sex: str, where: str) -> DroppedEntry | None:
    """What to list on ``first`` for another Patient resource with its id (read at ``where``): nothing when it
    agrees on birth date and sex, else an unread entry that says how they differ."""
    if (first.birth_date, first.sex) == (birth, sex):
        return None
    return DroppedEntry(
        where,
        f"Patient {first.patient_id} again, with birth date {birth.isoformat()} and sex {sex} where the first read says "
        f"{first.birth_date.isoformat()} and {first.sex}: the first is read",
    )


def merged_record(records: list[ChildRecord]) -> ChildRecord:
    """One child's records (in the order of the extract) as one: every finding, measurement and unread entry of each,
    an entry that a later record repeats exactly once.

    The first record's birth date, sex, name and record number are read (a later record that says another birth
    date or sex is listed, as :func:`repeated_patient` lists a repeated Patient resource); a death any record
    states stands; the child is a record not in use only when every record says so (one in use is the child's).
    Each record screened alone had been a partial result, and the two halves of a syndromic child could each
    stay under the threshold.
    """
    first = records[0]
    merged = replace(first, facts=list(first.facts), measurements=list(first.measurements), dropped=list(first.dropped))
    facts, measurements, dropped = set(merged.facts), set(merged.measurements), set(merged.dropped)
    for k, other in enumerate(records[1:], start=2):
        # An entry a record repeats from an earlier one is one entry (an extract appended to a cumulative one, two
        # Bundles that overlap), as a resource repeated within a record is (without_repeated_resources).
        merged.facts += [f for f in other.facts if f not in facts]
        merged.measurements += [m for m in other.measurements if m not in measurements]
        merged.dropped += [d for d in other.dropped if d not in dropped]
        facts.update(other.facts)
        measurements.update(other.measurements)
        dropped.update(other.dropped)
        differs = repeated_patient(merged, other.birth_date, other.sex, f"{other.source} record {k} of the child")
        if differs is not None:
            merged.dropped.append(differs)
        for name in ("name", "mrn", "practitioner", "organization"):
            if not getattr(merged, name):
                setattr(merged, name, getattr(other, name))
        merged.deceased = merged.deceased or other.deceased
        merged.inactive = merged.inactive and other.inactive
    return merged


def no_birth_date(value: Any) -> str:
    """The record error of a Patient whose birth date cannot be read."""
    year_only = isinstance(value, str) and re.fullmatch(r"[0-9]{4}", value) is not None
    return "Patient has no birthDate" + (" (a year alone is too coarse to screen a child under 7)" if year_only else "")


def patient_standing(raw: dict[str, Any]) -> tuple[date | None, str]:
    """``(deceased, inactive)`` of a Patient resource the reader has validated: the date of death (the first
    day a partial ``deceasedDateTime`` allows, so a child is never screened after it; ``DECEASED_UNDATED`` for
    ``deceasedBoolean`` true) and why the record is not in use ("" when it is)."""
    died = raw.get("deceasedDateTime")
    deceased = None
    if isinstance(died, str) and len(died) >= 4:
        year, month, day = int(died[:4]), int(died[5:7] or 1), int(died[8:10] or 1)
        deceased = date(year, month, day)
    elif raw.get("deceasedBoolean") is True:
        deceased = DECEASED_UNDATED
    inactive = ""
    for link in raw.get("link") or ():
        if isinstance(link, dict) and link.get("type") == "replaced-by":
            other = link.get("other")
            reference = other.get("reference") if isinstance(other, dict) else None
            inactive = f"replaced by {str(reference or 'another record')[:80]} (Patient.link): a merged record"
            break
    if not inactive and raw.get("active") is False:
        inactive = "Patient.active is false: the record is not in use"
    return deceased, inactive


class Unreadable(ValueError):
    """An entry that could be a finding but cannot be read as one; the message names the element. ``facts``: for
    a Condition coded in no system read for findings, what may still record a rare-disease diagnosis: its ICD-11
    codings (Orphanet maps them) and its names (a local code's display, text only: ``name`` facts), each with the
    Condition's date and certainty (``screening.orphanet``)."""

    def __init__(self, message: str, facts: list[CodedFact] | None = None) -> None:
        super().__init__(message)
        self.facts = facts or []


def condition_certainty(status: list[str], codings: list[Any]) -> tuple[bool, bool]:
    """``(refuted, unconfirmed)`` of a Condition from its verificationStatus codes and its raw codings (JSON
    objects): refuted also when an ICD-10-GM coding says A (excluded), unconfirmed when it says V (suspected)."""
    refuted, unconfirmed = "refuted" in status, not UNCONFIRMED.isdisjoint(status)
    for coding in codings:
        for extension in (coding.get("extension") or ()) if isinstance(coding, dict) else ():
            if isinstance(extension, dict) and extension.get("url") == GM_CERTAINTY:
                value = extension.get("valueCoding")
                certainty = str(value.get("code") or "").upper() if isinstance(value, dict) else ""
                refuted, unconfirmed = refuted or certainty == "A", unconfirmed or certainty == "V"
    return refuted, unconfirmed


# UCUM codes of an Age and the plain units writers give it, in days (a year and a month as the calendar averages).
_AGE_DAYS = {
    "a": 365.25, "mo": 30.4375, "wk": 7.0, "d": 1.0, "h": 1 / 24, "min": 1 / 1440,
    "year": 365.25, "years": 365.25, "month": 30.4375, "months": 30.4375, "week": 7.0, "weeks": 7.0,
    "day": 1.0, "days": 1.0,
}


def onset_age_days(age: Any) -> int | None:
    """A Condition's ``onsetAge`` (plain JSON Age) as days of age: the UCUM code, else the unit; None for an Age
    that says no age (no value, a negative one, a unit of no time), which leaves the Condition undated as before."""
    if not isinstance(age, dict):
        return None
    value = age.get("value")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 200 * 365.25:
        return None
    unit = next((u.strip().lower() for u in (age.get("code"), age.get("unit")) if isinstance(u, str) and u.strip().lower() in _AGE_DAYS), None)
    return None if unit is None else int(value * _AGE_DAYS[unit])


def condition_displays(concept: Any) -> list[str]:
    """The name of each coding with a code of a Condition's ``code`` (plain JSON), in order: the coding's
    ``display``, else the concept's ``text``, else "". A diagnosis coded in SNOMED CT, for which no map exists,
    is read by it (``screening.orphanet``); a display or text that is no string is no name."""
    if not isinstance(concept, dict):
        return []
    text = concept.get("text")
    fallback = text.strip() if isinstance(text, str) else ""
    names = []
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and coding.get("code"):
            display = coding.get("display")
            names.append(display.strip() if isinstance(display, str) and display.strip() else fallback)
    return names


def check_condition_codes(
    codings: list[tuple[str, str]], concept: Any = None, status: list[str] | None = None, when: date | None = None,
    onset: int | None = None,
) -> None:
    """Unreadable for a Condition without an ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding (``codings``: short
    systems), carrying what may still name a diagnosis (``Unreadable.facts``; ``concept``: the plain JSON ``code``,
    ``status``: its verificationStatus codes)."""
    if any(system in FINDING_SYSTEMS for system, _ in codings):
        return
    facts: list[CodedFact] = []
    if isinstance(concept, dict):
        refuted, unconfirmed = condition_certainty(status or [], concept.get("coding") or [])
        names = condition_displays(concept)
        for (system, code), name in zip(codings, names, strict=False):
            if system == "icd11" or name:
                short = system if system == "icd11" else "name"
                facts.append(CodedFact("condition", short, code, when, refuted, unconfirmed, name[:200], onset))
        text = concept.get("text")
        if not codings:  # no code at all: its text, else the display of each coding without a code
            written = [text] if isinstance(text, str) and text.strip() else [
                c.get("display") for c in concept.get("coding") or () if isinstance(c, dict) and not c.get("code")]
            for name in dict.fromkeys(n.strip() for n in written if isinstance(n, str) and n.strip()):
                facts.append(CodedFact("condition", "name", "", when, refuted, unconfirmed, name[:200], onset))
    if any(system == "icd11" for system, _ in codings):
        raise Unreadable("code: ICD-11 is read for recorded rare-disease diagnoses only; no ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding", facts)
    raise Unreadable("code: no ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding", facts)


def feature_presence(
    value_boolean: bool | None,
    value_codings: list[tuple[str, str]],
    value_string: str | None,
    interpretation: list[tuple[str, str]],
    other_value: str | None = None,
) -> bool:
    """Whether an HPO-coded Observation says its feature is present (False: excluded).

    ``value_codings`` are the value's codings other than HPO terms; ``other_value`` names a value element
    of another type (``valueInteger``), which cannot say either. No value at all is the feature asserted.
    """
    if value_boolean is not None:
        return value_boolean
    for pair in value_codings:
        if pair in _PRESENT:
            return True
        if pair in _ABSENT:
            return False
    if value_string is not None:
        word = value_string.strip().lower()
        if word in _PRESENT_WORDS:
            return True
        if word in _ABSENT_WORDS:
            return False
        raise Unreadable(f"valueString: neither present nor absent {value_string[:40]!r}")
    if value_codings:
        raise Unreadable(f"valueCodeableConcept: neither present nor absent {value_codings[0][1][:40]!r}")
    if other_value is not None:
        raise Unreadable(f"{other_value}: neither present nor absent")
    for pair in interpretation:
        if pair in _PRESENT:
            return True
        if pair in _ABSENT:
            return False
    return True


_DAYS_CODE = "49052-4"  # Gestational age in days: a plain number is days, not weeks


def gestation_as_text(codings: list[tuple[str, str]], text: Any, when: date | None) -> list[Measurement]:
    """An Observation's gestational age at birth written as text (``valueString``) as measurements in days; []
    when the Observation is not a gestational age or has no text. Unreadable when the text names no weeks or the
    Observation is undated: the child's growth is then read by chronological age, and the record says why."""
    codes = [code for system, code in codings if system == "loinc" and code in GESTATION_CODES]
    if not codes or not isinstance(text, str):
        return []
    written = text.strip()
    days = int(written) if written.isdigit() and set(codes) == {_DAYS_CODE} else gestation_text_days(written)
    if days is None:
        raise Unreadable(f"valueString {written[:20]!r}: a gestational age that is not weeks (28, 28.5, 28+3 or 28 3/7)")
    if when is None:
        raise Unreadable(UNDATED)
    return [Measurement(code, float(days), "d", when) for code in codes]


_BIRTH_SEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
_SEX_FOR_CLINICAL_USE = "http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse"
_CLINICAL_SEX: dict[str, Sex] = {"female-typical": "F", "male-typical": "M"}


def sex_for_growth(sex: Sex, extensions: Any) -> Sex:
    """The sex a child's growth is charted by: the sex parameter for clinical use where it names one, else the
    administrative gender when male or female, else US Core's birth sex. ``extensions``: the Patient's
    ``extension`` list as JSON (anything else is ignored: an extension is optional and never fails a record)."""
    birth: Sex = "U"
    for extension in extensions if isinstance(extensions, list) else ():
        if not isinstance(extension, dict):
            continue
        url = extension.get("url")
        if url == _SEX_FOR_CLINICAL_USE:
            for part in extension.get("extension") or []:  # complex: value, period, comment, supportingInfo
                if isinstance(part, dict) and part.get("url") == "value":
                    concept = part.get("valueCodeableConcept")
                    for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
                        if isinstance(coding, dict) and coding.get("code") in _CLINICAL_SEX:
                            return _CLINICAL_SEX[coding["code"]]
        elif url == _BIRTH_SEX and extension.get("valueCode") in ("M", "F"):
            birth = extension["valueCode"]
    return sex if sex != "U" else birth


K = TypeVar("K")


def resolve_medication_references(
    resources: list[tuple[K, Any]], full_urls: Mapping[K, str] | None = None
) -> list[tuple[K, Any]]:
    """``resources`` with each MedicationRequest that names its drug by ``medicationReference`` given that
    Medication's ``code`` as its ``medicationCodeableConcept`` (a copy; the reference removed, as R4 allows one of
    the two): a Medication contained in the request (``#id``), else one among ``resources`` by id or by its entry's
    ``fullUrl`` (``full_urls``). A reference none resolves is left as it is: the readers list the request
    (:func:`unresolved_medication`)."""
    if not any(isinstance(r, dict) and "medicationReference" in r for _, r in resources):
        return resources
    medications: dict[str, Any] = {}
    for key, raw in resources:
        if isinstance(raw, dict) and raw.get("resourceType") == "Medication":
            for name in (raw.get("id"), (full_urls or {}).get(key)):
                if isinstance(name, str) and name:
                    medications.setdefault(reference_key(name), raw)
    out = []
    for key, raw in resources:
        if isinstance(raw, dict) and raw.get("resourceType") == "MedicationRequest" and "medicationReference" in raw:
            medication = _referenced_medication(raw, medications)
            if medication is not None and isinstance(medication.get("code"), dict) and medication["code"]:
                raw = {k: v for k, v in raw.items() if k != "medicationReference"}
                raw["medicationCodeableConcept"] = medication["code"]
        out.append((key, raw))
    return out


def _referenced_medication(request: dict[str, Any], medications: dict[str, Any]) -> dict[str, Any] | None:
    reference = request.get("medicationReference")
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str) or not target:
        return None
    if target.startswith("#"):
        contained = request.get("contained")
        return next((c for c in contained if isinstance(c, dict) and c.get("resourceType") == "Medication"
                     and c.get("id") == target[1:]), None) if isinstance(contained, list) else None
    if not (target.startswith("urn:") or "Medication/" in target):
        return None
    found = medications.get(reference_key(target))
    return found if isinstance(found, dict) else None


def unresolved_medication(reference: Any) -> str:
    """Why a MedicationRequest whose ``medicationReference`` names no Medication in the input is listed."""
    target = reference.get("reference") if isinstance(reference, dict) else None
    display = reference.get("display") if isinstance(reference, dict) else None
    named = f"{str(target)[:60]}" if target else "no reference"
    said = f" ({str(display)[:60]})" if display else ""
    return f"medicationReference {named}{said}: no Medication with a code by that reference in the input, the drug is not read"


def _identifier_key(identifier: Any) -> tuple[str, str] | None:
    if not isinstance(identifier, dict):
        return None
    system, value = identifier.get("system"), identifier.get("value")
    if not isinstance(value, str) or not value:
        return None
    return (system if isinstance(system, str) else ""), value


# A transaction Bundle's conditional reference (FHIR R4 3.1.0.4.9 "Conditional References"): the Patient named by
# one identifier, ``Patient?identifier=[system|]value``, resolved by the server that takes the transaction.
_CONDITIONAL = re.compile(r"Patient\?identifier=([^&]+)")


def _conditional_identifier(value: dict[str, Any]) -> dict[str, str] | None:
    """The identifier a conditional reference names, as a plain Identifier, or None."""
    reference = value.get("reference")
    found = _CONDITIONAL.fullmatch(reference) if isinstance(reference, str) else None
    if found is None:
        return None
    system, bar, text = unquote(found.group(1)).rpartition("|")
    return {"system": system, "value": text} if bar else {"value": text}


def resolve_subject_identifiers(
    resources: list[tuple[K, Any]], full_urls: Mapping[K, str] | None = None, name: Callable[[K], str] = str
) -> list[tuple[K, Any]]:
    """``resources`` with each ``subject``/``patient`` that names its Patient by identifier only, or by a transaction's
    conditional reference (``Patient?identifier=system|value``), given the reference of the Patient among
    ``resources`` that carries that identifier (a copy). One that names no Patient, or more than one, is left as it
    is: the readers report it (:func:`no_subject`). ``name(key)`` is the id the readers give a Patient with neither
    an ``id`` nor an entry ``fullUrl`` (its place in the Bundle).

    A conditional reference had been read as a reference to a Patient called "Patient?identifier=...": every
    resource of the child a record error, and the child, its Patient read alone, "screened" with no finding."""
    def by_identifier(raw: Any) -> tuple[str, Any] | None:
        for element in ("subject", "patient"):
            value = raw.get(element) if isinstance(raw, dict) else None
            if not isinstance(value, dict):
                continue
            if "reference" not in value and _identifier_key(value.get("identifier")):
                return element, value
            if (conditional := _conditional_identifier(value)) is not None:
                return element, {k: v for k, v in value.items() if k != "reference"} | {"identifier": conditional}
        return None

    if not any(by_identifier(raw) is not None for _, raw in resources):
        return resources
    owners: dict[tuple[str, str], set[str]] = {}
    for key, raw in resources:
        if isinstance(raw, dict) and raw.get("resourceType") == "Patient":
            url = (full_urls or {}).get(key)
            pid = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else (reference_key(url) if url else name(key))
            identifiers = raw.get("identifier")
            for identifier in identifiers if pid and isinstance(identifiers, list) else ():
                if (named := _identifier_key(identifier)) is not None:
                    owners.setdefault(named, set()).add(pid)  # type: ignore[arg-type]
    out = []
    for key, raw in resources:
        found = by_identifier(raw)
        if found is not None:
            element, value = found
            named = _identifier_key(value["identifier"])
            # a system-less identifier matches a Patient's by value only where one Patient carries that value
            pids = owners.get(named, set()) if named and named[0] else {
                p for (_, v), ps in owners.items() if named and v == named[1] for p in ps}
            if len(pids) == 1:
                raw = dict(raw)
                raw[element] = {**value, "reference": f"Patient/{next(iter(pids))}"}
        out.append((key, raw))
    return out


def later_pages(links: Any) -> str | None:
    """Why a Bundle's records lack what its later pages hold, or None: a Bundle with a ``link`` of relation ``next``
    is one page of a search result (a searchset saved from ``GET [base]/Condition?patient=...`` or
    ``Patient?_revinclude=...``; servers page at 20 to 100 entries), and a child's other entries are on the pages not
    in the input. Read as it came, such a child had been "screened" on the first page's findings."""
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next":
            return (
                "Bundle.link 'next': the Bundle is one page of a search result, and the child's entries on its later "
                "pages are not in the input; fetch every page (follow 'next') into one extract, or use a Bulk Data $export"
            )
    return None


def unowned_in_bundle(count: int) -> DroppedEntry:
    """What the record of a Bundle's only Patient lists when ``count`` resources of the Bundle name no Patient in it
    (another id, a reference the readers cannot follow, or none): they are most likely the child's, read under
    another name. Without it the child had been "screened" on the Patient alone, a negative, beside record errors
    that did not say whose the resources were."""
    resources = "resource" if count == 1 else "resources"
    return DroppedEntry(
        "Bundle",
        f"{count} {resources} of the Bundle name no Patient in it (another id, or none) and were not read; they may be "
        "this child's: each is listed as an unread record",
    )


def no_subject(raw: Any, rtype: str) -> str:
    """Why a resource that names no Patient the readers can find is a record error."""
    for element in ("subject", "patient"):
        value = raw.get(element) if isinstance(raw, dict) else None
        if isinstance(value, dict) and "reference" not in value and (named := _identifier_key(value.get("identifier"))):
            system = f"{named[0][:60]}|" if named[0] else ""
            return f"{rtype} names its Patient by identifier {system}{named[1][:40]}, which no one Patient in the input carries"
    return f"{rtype} has no subject reference"


def without_repeated_resources(resources: list[tuple[K, Any]]) -> list[tuple[K, Any]]:
    """``resources`` without the exact repeats of a resource read before them: the same type, id and content (a
    Bundle listing an entry twice, a search's pages or included resources overlapping, export files that overlap).
    One resource is one entry of the record: read twice, a single low head circumference that the next visit did
    not repeat had "persisted" as microcephaly, and a malformation counted twice among the congenital codes, raising
    the risk. A repeat that differs (two resources that share an id) is read; a repeated Patient is the readers'
    (:func:`repeated_patient`)."""
    first: dict[tuple[str, str], Any] = {}
    out = []
    for key, raw in resources:
        if isinstance(raw, dict) and raw.get("resourceType") != "Patient" and isinstance(rid := raw.get("id"), str):
            earlier = first.setdefault((str(raw.get("resourceType")), rid), raw)
            if earlier is not raw and earlier == raw:
                continue
        out.append((key, raw))
    return out


def resolve_references(
    resources: Iterable[tuple[K, Any]], full_urls: Mapping[K, str] | None = None, name: Callable[[K], str] = str
) -> list[tuple[K, Any]]:
    """What every per-resource reader does before it groups ``resources`` by patient: an exact repeat of a resource
    left out (:func:`without_repeated_resources`), each drug named by reference given its Medication's code
    (:func:`resolve_medication_references`), each subject named by identifier its Patient's reference
    (:func:`resolve_subject_identifiers`; ``name``: the id of a Patient with no id, as the reader names it)."""
    read = without_repeated_resources(list(resources))
    return resolve_subject_identifiers(resolve_medication_references(read, full_urls), full_urls, name)
