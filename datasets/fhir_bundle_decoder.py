"""A Bundle line decoded by msgspec straight into typed structs holding only the elements screening reads
(in C: unknown elements skipped, types checked), and the children's records built from those structs.

This is the fast path of :func:`datasets.fhir_fast.records_from_ndjson_lines`, taken only by a line with
nothing to report: at the first doubt (msgspec refuses a type, a code, id or date is invalid, a Patient
has no birth date, a resource names no Patient of its Bundle, anything the per-resource reader would
report or read differently) :meth:`BundleLineReader.records` returns None and the caller reads the line
resource by resource as before. So the records, dropped entries and record errors stay those of
:mod:`datasets.fhir_fast`; each check below mirrors one of its checks. One difference, kept on purpose
(checking for it would cost a quarter of the reading): a number beyond the double range (``1e400``) in an
element nobody reads, where orjson refuses the whole line as not JSON, is skipped unconverted and the
line's children are read (RFC 8259 allows such a number; ``json.loads`` of the full validator reads it).

The structs are wide (one ``_Resource`` for every type, so that a Bundle's other resources, skipped by
screening, decode without a tagged union that would refuse their types): elements whose shape differs
between FHIR resource types (``name``, ``identifier``, ``type``, ``class``, ...) are kept raw and decoded
only for the resource types that read them; a resource of another type whose id does not fit only sends
its line the per-resource way. ``subject`` and ``code`` are kept raw too and read through the reader's
caches (a population repeats them), so they are checked only where they are read, as the per-resource
reader does.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from datasets.emr_records import (
    GESTATION_CODES,
    ChildRecord,
    CodedFact,
    Measurement,
    code_system,
    decimal_text,
    measurement,
    sex_of,
)
from datasets.fhir_entry_rules import FINDING_SYSTEMS, VOID_OBSERVATION_STATUS, VOID_VERIFICATION, condition_certainty
from datasets.fhir_primitives import ID, RESOURCE_TYPES, SYSTEMS, DateKind, parse_date, reference_key, valid_code

__all__ = ["BundleLineReader", "patient_key"]


# gc=False: these structs hold no reference cycles, and ~140,000 of them per 6,000 children would
# otherwise trigger the cyclic collector again and again.
class _Coding(Struct, gc=False):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class _Concept(Struct, gc=False):
    coding: list[_Coding] | None = None
    text: str | None = None


class _Reference(Struct, gc=False):
    reference: str | None = None


class _Period(Struct, gc=False):
    start: str | None = None


class _Quantity(Struct, gc=False):
    value: float | str | None = None  # a JSON integer is decoded as a float (bool is refused), as before
    unit: str | None = None
    code: str | None = None
    comparator: str | None = None  # a bound: the per-resource reader lists it


class _HumanName(Struct, gc=False):
    text: str | None = None
    given: list[str] | None = None
    family: str | None = None


class _Identifier(Struct, gc=False):
    type: _Concept | None = None
    value: str | None = None
    use: str | None = None


# An extension that may name the sex a growth chart is read by (datasets.fhir_entry_rules.sex_for_growth)
_CLINICAL_SEX: Final = b"sexParameterForClinicalUse"
_BIRTH_SEX: Final = b"us-core-birthsex"

# The FHIR id pattern checked by msgspec while decoding (``ID`` as a search: anchored, ``\Z`` not ``$``).
_Id = Annotated[str, Meta(pattern="^" + ID.pattern + r"\Z")]


class _Resource(Struct, gc=False, rename={"class_": "class"}):
    resourceType: str | None = None
    id: _Id | None = None  # a bad id of a resource screening skips also sends the line the slow way
    # Kept raw and read through the reader's caches: a population repeats a child's reference on each of
    # its resources and a few hundred codes (~19 Observations a child: two structs fewer each).
    subject: Raw = Raw()
    status: str | None = None
    code: Raw = Raw()
    # Condition
    onsetDateTime: str | None = None
    onsetAge: Raw = Raw()  # rare: a Condition dated by the age at onset goes to the per-resource reader
    recordedDate: str | None = None
    verificationStatus: _Concept | None = None
    # Observation
    effectiveDateTime: str | None = None
    effectiveInstant: str | None = None
    effectivePeriod: _Period | None = None
    issued: str | None = None
    valueQuantity: _Quantity | None = None
    valueCodeableConcept: Raw = Raw()
    valueString: Raw = Raw()  # a gestational age written as text ("28+3") goes to the per-resource reader
    component: Raw = Raw()
    # Procedure
    performedDateTime: str | None = None
    performedPeriod: _Period | None = None
    # Encounter
    period: _Period | None = None
    class_: Raw = Raw()
    type: Raw = Raw()
    serviceType: Raw = Raw()
    # MedicationRequest (the per-resource reader asks whether medication[x] is there at all, even null)
    intent: str | None = None
    authoredOn: str | None = None
    medicationCodeableConcept: _Concept | None | UnsetType = UNSET
    medicationReference: Raw = Raw()
    # Patient
    birthDate: str | None = None
    gender: str | None = None
    name: Raw = Raw()
    identifier: Raw = Raw()
    generalPractitioner: Raw = Raw()
    managingOrganization: Raw = Raw()
    # A record of a child who has died, or one not in use, goes to the per-resource reader (rare): it reads them
    # with their checks (datasets.fhir_entry_rules.patient_standing). ``active: true`` is common and read here.
    deceasedBoolean: Raw = Raw()
    deceasedDateTime: Raw = Raw()
    active: bool | None = None
    link: Raw = Raw()
    # The sex a growth chart needs may be in an extension (datasets.fhir_entry_rules.sex_for_growth)
    extension: Raw = Raw()


class _Entry(Struct, gc=False):
    resource: _Resource | None = None
    fullUrl: str | None = None


class _Bundle(Struct, gc=False):
    resourceType: str | None = None
    entry: list[_Entry] | None = None
    link: Raw = Raw()  # a page of a search names its next page: the per-resource reader says so on each record


_BUNDLE: Final = msgspec.json.Decoder(_Bundle)
_RESOURCE: Final = msgspec.json.Decoder(_Resource)
_NAMES: Final = msgspec.json.Decoder(list[_HumanName])
_IDENTIFIERS: Final = msgspec.json.Decoder(list[_Identifier])
_REFERENCES: Final = msgspec.json.Decoder(list[_Reference])
_REFERENCE: Final = msgspec.json.Decoder(_Reference | None)
_CONCEPTS: Final = msgspec.json.Decoder(list[_Concept])
_CONCEPT: Final = msgspec.json.Decoder(_Concept | None)
_ANY: Final = msgspec.json.Decoder()
# A reader's caches are emptied at this size: a population repeats a few thousand dates and codes,
# but dateTimes with a time of day may all differ.
_CACHE_SIZE: Final = 1 << 16


class _Doubt(Exception):
    """Something on this line would be reported, or read differently: read it resource by resource."""


class BundleLineReader:
    """Reads Bundle lines of one extract into records, keeping the parsed dates and codings of the lines
    read so far (a population repeats them; a dict lookup is a fifth of a parse)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._dates: dict[DateKind, dict[str, date | None]] = {"dateTime": {}, "date": {}, "instant": {}}
        self._codings: dict[tuple[str | None, str | None], tuple[str, str] | tuple[()]] = {}
        self._references: dict[bytes, str] = {}  # a raw subject -> the id it names
        # a raw code -> (has codings, its codings read); the first False: absent, null or without coding
        self._concepts: dict[bytes, tuple[bool, list[tuple[str, str]], bool, bool, list[str]]] = {}

    def records(self, line: bytes) -> list[ChildRecord] | None:
        """The records of one NDJSON line holding a Bundle, when the line has nothing to report (no
        record error, no dropped entry); None when it must be read by the per-resource reader."""
        # msgspec skips an unknown element without checking its UTF-8, where orjson refuses the line.
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return None
        try:
            bundle = _BUNDLE.decode(line)
        except msgspec.DecodeError:  # malformed JSON, or a type that does not fit (ValidationError)
            return None
        if bundle.resourceType != "Bundle" or (bundle.link and b'"next"' in bytes(bundle.link)):
            return None
        try:
            return self._records(bundle.entry or [])
        except _Doubt:
            return None

    def resource_records(self, texts: list[bytes]) -> list[ChildRecord] | None:
        """The records of loose resources, one JSON resource per item (a Bulk Data partition's), when
        none has anything to report; None when they must be read by the per-resource reader. They are
        read as the entries of one Bundle: the per-resource reader groups loose resources by patient
        in the order given, as it reads a Bundle's entries."""
        entries = []
        for text in texts:
            if not text.isascii():
                try:
                    text.decode("utf-8")
                except UnicodeDecodeError:
                    return None
            try:
                entries.append(_Entry(_RESOURCE.decode(text)))
            except msgspec.DecodeError:
                return None
        try:
            return self._records(entries)
        except _Doubt:
            return None

    def _records(self, entries: list[_Entry]) -> list[ChildRecord]:
        patients: dict[str, ChildRecord] = {}
        facts: dict[str, list[CodedFact]] = {}
        measurements: dict[str, list[Measurement]] = {}
        referenced: set[str] = set()  # every subject, also of resources that give no fact
        read_ids: set[tuple[str, str]] = set()  # (type, id) of the resources read: a repeat is the slow way's
        date_of, codings_of, date_times = self._date, self._codings_of, self._dates["dateTime"]
        references, concepts = self._references, self._concepts
        for entry in entries:
            r = entry.resource
            if r is None:
                continue
            rtype = r.resourceType
            if rtype not in RESOURCE_TYPES:
                if rtype == "Bundle":
                    raise _Doubt  # a child's Bundle among loose resources: the per-resource reader reads it
                continue
            if rtype == "Patient":
                rid = r.id
                birth = date_of(r.birthDate, "date")
                if birth is None or rid is None:
                    raise _Doubt  # reported (no birth date), or named after its place in the Bundle
                if entry.fullUrl and reference_key(entry.fullUrl) != rid:
                    raise _Doubt  # its resources may name it by the entry's fullUrl: the per-resource reader maps it
                if r.deceasedBoolean or r.deceasedDateTime or r.link or r.active is False or rid in patients:
                    raise _Doubt  # a repeated Patient too: the per-resource reader says how it differs
                sex, unread_sex = sex_of(r.gender, "gender")
                if unread_sex:
                    raise _Doubt  # the per-resource reader lists the value on the record
                if r.extension and (_CLINICAL_SEX in (extension := bytes(r.extension)) or (sex == "U" and _BIRTH_SEX in extension)):
                    raise _Doubt  # the sex to chart growth by is in an extension: the per-resource reader reads it
                patients[rid] = ChildRecord(rid, birth, sex, source=self.source, **self._patient_extras(r))  # type: ignore[arg-type]
                continue
            if r.id is not None:
                if (rtype, r.id) in read_ids:
                    raise _Doubt  # a resource repeated: the per-resource reader reads an exact repeat once
                read_ids.add((rtype, r.id))
            subject = bytes(r.subject)
            ref = references.get(subject) or self._reference(subject)
            referenced.add(ref)
            if rtype == "Observation":
                # Most resources are Observations (~19 a child): read here, the checks of the per-resource
                # reader in the same order, the dateTime cache asked first (a call less per resource).
                if not r.status:
                    raise _Doubt
                code = bytes(r.code)
                read = concepts.get(code) or self._concept(code)
                if not read[0]:
                    raise _Doubt  # required; an empty CodeableConcept ({}) is reported, one with text only is not
                effective = r.effectiveDateTime
                when = date_times[effective] if effective in date_times else date_of(effective)
                if when is None:
                    if r.effectiveInstant is not None or r.effectivePeriod is not None:
                        raise _Doubt  # dated another way: the per-resource reader reads it
                    when = date_of(r.issued, "instant")
                if read[2]:
                    raise _Doubt  # a phenotypic feature (HPO-coded): read the per-resource way
                codings = read[1]
                quantity = r.valueQuantity
                if r.component:
                    raise _Doubt  # a panel's components (height, weight, ...): read the per-resource way
                if quantity is None:
                    if r.valueCodeableConcept:
                        raise _Doubt  # may hold a feature's HPO term (Genomics Reporting's observed phenotype)
                    if r.valueString and any(system == "loinc" and c in GESTATION_CODES for system, c in codings):
                        raise _Doubt  # a gestational age written as text
                    continue
                value = quantity.value
                if quantity.comparator is not None:
                    raise _Doubt
                if isinstance(value, str):
                    value = _float(value)
                if value is None or r.status in VOID_OBSERVATION_STATUS:
                    continue
                if when is None:
                    if any(system == "loinc" for system, _ in codings):
                        raise _Doubt  # an undated measured value: listed as unread
                    continue
                unit = quantity.code or quantity.unit or ""
                found = [measurement(loinc, value, unit, when) for system, loinc in codings if system == "loinc"]
                if found:
                    if ref in measurements:
                        measurements[ref] += found
                    else:
                        measurements[ref] = found
                continue
            if rtype == "Condition":
                if r.onsetAge:
                    raise _Doubt
                when = date_of(r.onsetDateTime) or date_of(r.recordedDate)
                status = [code for _, code in codings_of(r.verificationStatus)]
                code = bytes(r.code)
                read = concepts.get(code) or self._concept(code)
                if VOID_VERIFICATION in status:
                    new = []
                elif not read[3]:
                    raise _Doubt  # reported as unread (no ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding)
                elif b'"extension"' in code:
                    raise _Doubt  # a coding's extension may say the diagnosis is suspected or excluded (ICD-10-GM)
                else:
                    refuted, unconfirmed = condition_certainty(status, [])  # no coding extension: checked above
                    new = [
                        CodedFact("condition", s, c, when, refuted, unconfirmed, name)
                        for (s, c), name in zip(read[1], read[4], strict=True)
                    ]
            elif rtype == "Procedure":
                _required(r.status)
                period = r.performedPeriod
                when = date_of(r.performedDateTime) or date_of(period.start if period is not None else None)
                new = [CodedFact("procedure", s, c, when) for s, c in self._codings_of_raw(r.code)]
            elif rtype == "Encounter":
                _required(r.status)
                if not r.class_ or _empty(_ANY.decode(r.class_)):
                    raise _Doubt
                period = r.period
                when = date_of(period.start if period is not None else None)
                codings = []
                for concept in _decode(_CONCEPTS, r.type) or ():
                    codings += codings_of(concept)
                if r.serviceType:
                    codings += codings_of(_decode(_CONCEPT, r.serviceType))
                new = [CodedFact("encounter", s, c, when) for s, c in codings]
            else:  # MedicationRequest
                _required(r.status)
                _required(r.intent)
                concept = r.medicationCodeableConcept
                if concept is UNSET or r.medicationReference:
                    raise _Doubt  # no drug at all (reported), or one named by reference (resolved the per-resource way)
                when = date_of(r.authoredOn)
                new = [CodedFact("medication", s, c, when) for s, c in codings_of(None if concept is UNSET else concept)]
            if new:
                facts.setdefault(ref, []).extend(new)
        if not referenced <= patients.keys():
            raise _Doubt  # resources of a Patient not in the Bundle: reported
        for pid, record in patients.items():
            record.facts.extend(facts.get(pid, ()))
            record.measurements.extend(measurements.get(pid, ()))
        return list(patients.values())

    def _reference(self, raw: bytes) -> str:
        """The id a raw subject names (after its last ``/``), remembered; _Doubt when it names none."""
        subject = _decode(_REFERENCE, raw)
        if subject is None or not subject.reference:
            raise _Doubt  # a required subject, or the patient element: left to the per-resource reader
        ref: str = reference_key(subject.reference)
        if len(self._references) >= _CACHE_SIZE:
            self._references.clear()
        self._references[raw] = ref
        return ref

    def _concept(self, raw: bytes) -> tuple[bool, list[tuple[str, str]], bool, bool, list[str]]:
        """A raw CodeableConcept read, remembered (a code that does not read is never remembered): whether
        it has codings, the codings, whether one is an HPO term, whether one can be a finding (ICD-10,
        SNOMED CT, HPO), and each coding's name (``datasets.fhir_entry_rules.condition_displays``)."""
        concept = _decode(_CONCEPT, raw)
        codings = self._codings_of(concept)
        names: list[str] = []
        if concept is not None and concept.coding:
            text = concept.text.strip() if concept.text else ""
            names = [c.display.strip() if c.display and c.display.strip() else text for c in concept.coding if c.code]
        read = (
            concept is not None and concept.coding is not None,
            codings,
            any(s == "hpo" for s, _ in codings),
            any(s in FINDING_SYSTEMS for s, _ in codings),
            names,
        )
        if len(self._concepts) >= _CACHE_SIZE:
            self._concepts.clear()
        self._concepts[raw] = read
        return read

    def _codings_of_raw(self, raw: Raw) -> list[tuple[str, str]]:
        code = bytes(raw)
        return (self._concepts.get(code) or self._concept(code))[1]

    def _date(self, value: str | None, kind: DateKind = "dateTime") -> date | None:
        if value is None:
            return None
        known = self._dates[kind]
        if value in known:
            return known[value]
        try:
            parsed = parse_date(value, kind)
        except ValueError:
            raise _Doubt from None
        if len(known) >= _CACHE_SIZE:
            known.clear()
        known[value] = parsed
        return parsed

    def _codings_of(self, concept: _Concept | None | UnsetType) -> list[tuple[str, str]]:
        """``(short system, code)`` of each coding with a code, as ``datasets.fhir_fast`` reads them."""
        if concept is None or concept is UNSET:
            return []
        codings = concept.coding  # type: ignore[union-attr]
        if not codings:
            return []
        known = self._codings
        out = []
        for coding in codings:
            key = (coding.system, coding.code)
            pair = known.get(key)
            if pair is None:
                pair = _coding(*key)
                if len(known) >= _CACHE_SIZE:
                    known.clear()
                known[key] = pair
            if pair:
                out.append(pair)
        return out

    def _patient_extras(self, r: _Resource) -> dict[str, str]:
        """Name, record number and whose patient the child is, as :mod:`datasets.fhir_fast` reads them."""
        name = ""
        for human in _decode(_NAMES, r.name) or ():
            name = human.text or " ".join([*(human.given or ()), human.family or ""]).strip()
            if name:
                break
        mrn = ""
        for identifier in _decode(_IDENTIFIERS, r.identifier) or ():
            codes = [code for _, code in self._codings_of(identifier.type)]
            if "MR" in codes or (not mrn and identifier.use == "usual"):
                mrn = identifier.value or ""
        practitioners = [ref.reference for ref in _decode(_REFERENCES, r.generalPractitioner) or () if ref.reference]
        managing = _decode(_REFERENCE, r.managingOrganization)
        organization = (managing.reference or "") if managing is not None else ""
        return {
            "name": name,
            "mrn": mrn,
            "practitioner": next((p for p in practitioners if "Practitioner" in p), practitioners[0] if practitioners else ""),
            "organization": organization or next((p for p in practitioners if "Organization" in p), ""),
        }


def _coding(system: str | None, code: str | None) -> tuple[str, str] | tuple[()]:
    """One coding read (``()``: no code, nothing to read); _Doubt for an invalid system URI or code."""
    short = SYSTEMS.get(system) if system is not None else None
    if short is None and system is not None:
        if not system or " " in system:
            raise _Doubt
        short = code_system(system)
    if code is None:
        return ()
    if not valid_code(code):
        raise _Doubt
    return (short or "other", code)


def _float(value: str) -> float:
    """A quantity's value given as a string (``"12.5"``), as the per-resource reader converts it."""
    try:
        return decimal_text(value)
    except ValueError:
        raise _Doubt from None  # the per-resource reader lists it


def _required(value: str | None) -> None:
    if not value:
        raise _Doubt


def _empty(value: Any) -> bool:
    """What the per-resource reader counts as a missing required element."""
    return value is None or value == "" or value == [] or value == {}


def _decode(decoder: msgspec.json.Decoder[Any], raw: Raw | bytes) -> Any:
    """A raw element in the shape this resource type gives it (None when absent)."""
    if not raw:
        return None
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError:
        raise _Doubt from None


class _Keyed(Struct, gc=False):
    """What names a loose resource's patient."""

    resourceType: str | None = None
    id: str | None = None
    subject: _Reference | None = None
    patient: _Reference | None = None


_KEYED: Final = msgspec.json.Decoder(_Keyed)


def patient_key(line: bytes) -> str | None | UnsetType:
    """The patient a loose resource belongs to (the Patient's id, or the last part of its ``subject``,
    else ``patient``, reference), None when it names none; UNSET when the typed decoder cannot tell (not
    JSON, invalid UTF-8, an element of another shape) and the caller must parse the line itself."""
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return UNSET
    try:
        keyed = _KEYED.decode(line)
    except msgspec.DecodeError:
        return UNSET
    if keyed.resourceType == "Patient":
        return keyed.id
    for element in (keyed.subject, keyed.patient):
        if element is not None and element.reference is not None:
            return reference_key(element.reference)
    return None
