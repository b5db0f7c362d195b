"""Read children's records from FHIR R4 fast: orjson, and only the elements screening uses.

The same records (with the dropped entries that make a record incomplete, ``datasets/emr_records.py``)
and record errors as :mod:`datasets.fhir_emr` (which validates every resource with the
``fhir.resources`` models, about 7x slower) for the elements screening reads: resource ids, the
Patient's birth date, gender, name, record number and practitioner, subject references, codings, the
dates of each kind of resource,
Observation quantities, and the elements FHIR requires of those resources (Observation status and
code, Encounter status and class, ...). What it does not check is the rest of a resource (an unknown
element, an invalid ``Encounter.location``): ``fhir.resources`` rejects such a resource, this reader
reads what screening needs from it. ``screen-emr --validate full`` keeps the full validation.

Dates follow ``fhir.resources`` (:mod:`datasets.fhir_primitives`).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from datasets.emr_records import (
    ChildRecord,
    CodedFact,
    DroppedEntry,
    FactKind,
    Measurement,
    RecordError,
    bound_unread,
    code_system,
    decimal_text,
    sex_of,
)
from datasets.errors import ExtractError
from datasets.fhir_bundle_decoder import BundleLineReader
from datasets.fhir_entry_rules import (
    MONTH_ONLY_BIRTH,
    OTHER_VALUES,
    UNDATED,
    VOID_OBSERVATION_STATUS,
    VOID_VERIFICATION,
    Unreadable,
    check_condition_codes,
    condition_certainty,
    condition_displays,
    feature_presence,
    gestation_as_text,
    later_pages,
    month_only_birth,
    no_birth_date,
    no_subject,
    onset_age_days,
    patient_standing,
    repeated_patient,
    resolve_references,
    sex_for_growth,
    unowned_in_bundle,
    unresolved_medication,
)
from datasets.fhir_primitives import (
    KINDS,
    REQUIRED,
    RESOURCE_TYPES,
    SYSTEMS,
    UTF8_BOM,
    DateKind,
    full_url_keys,
    invalid_id,
    merge_aliases,
    parse_date,
    reference_key,
    valid_code,
)

__all__ = [
    "child_name",
    "not_utf8",
    "utf8_lines",
    "read_fhir_fast",
    "records_from_bundle_fast",
    "records_from_resources_fast",
    "records_from_ndjson_lines",
    "with_later_pages",
    "bundles_within",
    "NESTED_TOO_DEEP",
    "RESOURCE_TYPES",
]

class _Invalid(ValueError):
    """An element screening reads is malformed; the message names the element."""


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{path}: not an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"{path}: not an array")
    return value


def _date(value: Any, path: str, kind: DateKind = "dateTime") -> date | None:
    """The calendar date of a date/dateTime/instant element (None when absent or partial)."""
    if value is None:
        return None
    try:
        if type(value) is not str:
            raise ValueError(value)
        return parse_date(value, kind)
    except ValueError as exc:
        raise _Invalid(f"{path}: invalid date {str(value)[:40]!r}") from exc


def _codings(concept: Any, path: str) -> list[tuple[str, str]]:
    if concept is None:
        return []
    if type(concept) is not dict:
        raise _Invalid(f"{path}: not an object")
    codings = concept.get("coding")
    if codings is None:
        return []
    if type(codings) is not list:
        raise _Invalid(f"{path}.coding: not an array")
    out = []
    for coding in codings:
        if type(coding) is not dict:
            raise _Invalid(f"{path}.coding.{_position(codings, coding)}: not an object")
        code, system = coding.get("code"), coding.get("system")
        short = SYSTEMS.get(system) if system is not None else None  # a known URI is a valid one
        if short is None and system is not None:
            if type(system) is not str or not system or " " in system:
                raise _Invalid(f"{path}.coding.{_position(codings, coding)}.system: invalid uri")
            short = code_system(system)
        if code is None:
            continue
        if type(code) is not str or valid_code(code) is False:
            raise _Invalid(f"{path}.coding.{_position(codings, coding)}.code: invalid code {str(code)[:40]!r}")
        out.append((short or "other", code))
    return out


def _position(items: list[Any], item: Any) -> int:
    """Where a bad element is in its array (looked up only for the error message)."""
    return next(i for i, x in enumerate(items) if x is item)


def _reference(raw: dict[str, Any]) -> str | None:
    for element in ("subject", "patient"):
        value = raw.get(element)
        if value is None:
            continue
        if type(value) is not dict:
            raise _Invalid(f"{element}: not an object")
        reference = value.get("reference")
        if reference is None:
            return None
        if type(reference) is not str or not reference:
            raise _Invalid(f"{element}.reference: invalid reference")
        return reference_key(reference)
    return None


def _owner(raw: dict[str, Any]) -> str | None:
    """The Patient a resource that cannot be read names (as ``datasets.fhir_emr`` finds it)."""
    for key in ("subject", "patient"):
        value = raw.get(key)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference:
            return reference_key(reference)
    return None


def _strings(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if type(value) is not list or any(type(v) is not str for v in value):
        raise _Invalid(f"{path}: not an array of strings")
    return value


def _optional_str(value: Any, path: str) -> str | None:
    if value is not None and type(value) is not str:
        raise _Invalid(f"{path}: not a string")
    return value


# HumanName.use values of a name the child no longer goes by, or not the name of record: shown only when the
# record has no other (an adopted child's birth name, use "old", is a safeguarding matter).
_NOT_THE_NAME = frozenset({"old", "nickname", "anonymous", "maiden"})
_USE_RANK = {"official": 0, "usual": 1}
# ISO 21090 EN representation: the ideographic form (kanji) before the alphabetic, the syllabic (kana) reading last.
_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
_REPRESENTATION_RANK = {"IDE": 0, "ABC": 1, "SYL": 2}
_CJK_SCRIPTS = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA", "HANGUL")


def _in_cjk_script(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    return bool(letters) and all(unicodedata.name(c, "").startswith(_CJK_SCRIPTS) for c in letters)


def _written(human: dict[str, Any]) -> str:
    """One HumanName as text: its ``text`` when given; else a name in a CJK script family first with no space
    (山田花子, 홍길동), any other given names first (Jane Smith)."""
    text = human.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    given = [g.strip() for g in human.get("given") or [] if isinstance(g, str) and g.strip()]
    family = human.get("family")
    family = family.strip() if isinstance(family, str) else ""
    if _in_cjk_script(family + "".join(given)):
        return family + "".join(given)
    return " ".join([*given, family]).strip()


def _representation(human: dict[str, Any]) -> int:
    for extension in human.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == _REPRESENTATION:
            return _REPRESENTATION_RANK.get(str(extension.get("valueCode")), 1)
    return 1


def child_name(names: list[dict[str, Any]]) -> str:
    """The name a child is shown by, from ``Patient.name`` as FHIR JSON (both readers, one rule): a current name
    (no ``period.end``) before a former one, ``old``, ``nickname``, ``anonymous`` and ``maiden`` names only when
    no other is there, ``official`` then ``usual`` then the rest, the ideographic representation before the
    alphabetic and the syllabic, then the record's order."""
    ranked = []
    for position, human in enumerate(names):
        shown = _written(human) if isinstance(human, dict) else ""
        if not shown:
            continue
        period = human.get("period")
        ended = isinstance(period, dict) and bool(period.get("end"))
        use = str(human.get("use") or "")
        rank = (use in _NOT_THE_NAME, ended, _USE_RANK.get(use, 2), _representation(human), position)
        ranked.append((rank, shown))
    return min(ranked)[1] if ranked else ""


def _patient_extras(raw: dict[str, Any]) -> dict[str, str]:
    """Name, record number and whose patient the child is (``datasets.fhir_emr``'s reading of them)."""
    names = []
    for i, human in enumerate(_list(raw.get("name", []), "name")):
        human = _obj(human, f"name.{i}")
        _strings(human.get("given"), f"name.{i}.given")
        for element in ("family", "text", "use"):
            _optional_str(human.get(element), f"name.{i}.{element}")
        if human.get("period") is not None:
            _optional_str(_obj(human["period"], f"name.{i}.period").get("end"), f"name.{i}.period.end")
        names.append(human)
    name = child_name(names)
    mrn = ""
    for i, identifier in enumerate(_list(raw.get("identifier", []), "identifier")):
        identifier = _obj(identifier, f"identifier.{i}")
        codes = [code for _, code in _codings(identifier.get("type"), f"identifier.{i}.type")]
        value = _optional_str(identifier.get("value"), f"identifier.{i}.value")
        if "MR" in codes or (not mrn and identifier.get("use") == "usual"):
            mrn = value or ""
    practitioners = []
    for i, ref in enumerate(_list(raw.get("generalPractitioner", []), "generalPractitioner")):
        reference = _optional_str(_obj(ref, f"generalPractitioner.{i}").get("reference"), "generalPractitioner.reference")
        if reference:
            practitioners.append(reference)
    managing = raw.get("managingOrganization")
    organization = ""
    if managing is not None:
        organization = _optional_str(_obj(managing, "managingOrganization").get("reference"), "managingOrganization") or ""
    return {
        "name": name,
        "mrn": mrn,
        "practitioner": next((r for r in practitioners if "Practitioner" in r), practitioners[0] if practitioners else ""),
        "organization": organization or next((r for r in practitioners if "Organization" in r), ""),
    }


def _facts(raw: dict[str, Any], kind: FactKind) -> list[CodedFact]:
    if kind == "condition":
        onset_date = _date(raw.get("onsetDateTime"), "onsetDateTime")
        age = raw.get("onsetAge")
        if age is not None and type(age) is not dict:
            raise _Invalid("onsetAge: not an object")
        onset = None if onset_date or age is None else onset_age_days(age)
        when = onset_date or (None if onset is not None else _date(raw.get("recordedDate"), "recordedDate"))
        status = [code for _, code in _codings(raw.get("verificationStatus"), "verificationStatus")]
        codings = _codings(raw.get("code"), "code")
        if VOID_VERIFICATION in status:
            return []
        check_condition_codes(codings, raw.get("code"), status, when, onset)
        raw_codings = raw["code"].get("coding") or []
        for i, coding in enumerate(raw_codings):
            for j, extension in enumerate(_list(coding.get("extension", []), f"code.coding.{i}.extension")):
                if type(_obj(extension, f"code.coding.{i}.extension.{j}").get("url")) is not str:
                    raise _Invalid(f"code.coding.{i}.extension.{j}.url: field required")
        refuted, unconfirmed = condition_certainty(status, raw_codings)
        names = condition_displays(raw["code"])
        return [
            CodedFact(kind, s, c, when, refuted, unconfirmed, name, onset) for (s, c), name in zip(codings, names, strict=True)
        ]
    if kind == "procedure":
        period = raw.get("performedPeriod")
        start = _obj(period, "performedPeriod").get("start") if period is not None else None
        when = _date(raw.get("performedDateTime"), "performedDateTime") or _date(start, "performedPeriod.start")
        return [CodedFact(kind, s, c, when) for s, c in _codings(raw.get("code"), "code")]
    if kind == "encounter":
        period = raw.get("period")
        when = _date(_obj(period, "period").get("start") if period is not None else None, "period.start")
        codings = []
        for i, concept in enumerate(_list(raw.get("type", []), "type")):
            codings += _codings(concept, f"type.{i}")
        codings += _codings(raw.get("serviceType"), "serviceType")
        return [CodedFact(kind, s, c, when) for s, c in codings]
    if "medicationCodeableConcept" not in raw and "medicationReference" not in raw:
        raise _Invalid("medication[x]: field required")
    when = _date(raw.get("authoredOn"), "authoredOn")
    if "medicationReference" in raw:  # not resolved (resolve_medication_references)
        raise Unreadable(unresolved_medication(raw["medicationReference"]))
    return [
        CodedFact(kind, s, c, when)
        for s, c in _codings(raw.get("medicationCodeableConcept"), "medicationCodeableConcept")
    ]


def _observation(raw: dict[str, Any]) -> list[Measurement] | list[CodedFact]:
    """Measurements (LOINC-coded quantities: the value's, and each component's, as a vital-signs panel holds
    height, weight and head circumference), or a phenotypic feature (an HPO-coded Observation,
    :mod:`datasets.fhir_entry_rules`), or nothing."""
    period = raw.get("effectivePeriod")
    when = (
        _date(raw.get("effectiveDateTime"), "effectiveDateTime")
        or _date(raw.get("effectiveInstant"), "effectiveInstant", "instant")
        or (_date(_obj(period, "effectivePeriod").get("start"), "effectivePeriod.start") if period is not None else None)
        or _date(raw.get("issued"), "issued", "instant")
    )
    codings = _codings(raw.get("code"), "code")
    quantity, components = raw.get("valueQuantity"), raw.get("component")
    if quantity is None:
        string = raw.get("valueString")
        if string is not None and type(string) is not str:
            raise _Invalid("valueString: not a string")
        void = raw.get("status") in VOID_OBSERVATION_STATUS if isinstance(raw.get("status"), str) else False
        if not void and (gestation := gestation_as_text(codings, string, when)):
            return gestation
        features = _feature(raw, codings, when)
        if features or components is None:
            return features
    measured = [] if quantity is None else [(codings, *_quantity(quantity, "valueQuantity"), "valueQuantity")]
    for i, component in enumerate(_list(components, "component") if components is not None else ()):
        component = _obj(component, f"component.{i}")
        value = component.get("valueQuantity")
        if value is not None:
            path = f"component.{i}.valueQuantity"
            measured.append((_codings(component.get("code"), f"component.{i}.code"), *_quantity(value, path), path))
    if raw.get("status") in VOID_OBSERVATION_STATUS:
        return []
    if quantity is not None and any(system == "hpo" for system, _ in codings):
        raise Unreadable("valueQuantity: neither present nor absent")  # a feature with a quantity says neither
    out = []
    for coded, value, unit, comparator, path in measured:
        if value is None or not any(system == "loinc" for system, _ in coded):
            continue
        if when is None:
            raise Unreadable(UNDATED)
        if comparator:
            raise Unreadable(f"{path} {bound_unread(comparator, f'{value:g}', unit)}")
        out += [Measurement(loinc, value, unit, when) for system, loinc in coded if system == "loinc"]
    return out


def _quantity(quantity: Any, path: str) -> tuple[float | None, str, str]:
    """A Quantity's value, unit (its code, else its unit text) and comparator ("" for a measured value)."""
    if type(quantity) is not dict:
        raise _Invalid(f"{path}: not an object")
    value = quantity.get("value")
    if type(value) is str:
        try:
            value = decimal_text(value)
        except ValueError as exc:
            raise _Invalid(f"{path}.value: not a decimal ({exc})") from exc
    elif value is not None and type(value) is not float and type(value) is not int:  # bool is not a decimal
        raise _Invalid(f"{path}.value: not a decimal")
    code, unit, comparator = quantity.get("code"), quantity.get("unit"), quantity.get("comparator")
    if (code is not None and type(code) is not str) or (unit is not None and type(unit) is not str):
        raise _Invalid(f"{path}.code/unit: not a string")
    if comparator is not None and comparator not in ("<", "<=", ">=", ">"):
        raise _Invalid(f"{path}.comparator: not one of < <= >= >")
    return (None if value is None else float(value)), code or unit or "", comparator or ""


def _feature(raw: dict[str, Any], codings: list[tuple[str, str]], when: date | None) -> list[CodedFact]:
    concept = raw.get("valueCodeableConcept")
    value_codings = _codings(concept, "valueCodeableConcept")
    terms = [c for s, c in codings if s == "hpo"] + [c for s, c in value_codings if s == "hpo"]
    if not terms:
        return []  # not a feature: the rest of the resource is not read (nor checked)
    interpretation = [p for i, c in enumerate(_list(raw.get("interpretation") or [], "interpretation"))
                      for p in _codings(c, f"interpretation.{i}")]
    boolean, string = raw.get("valueBoolean"), raw.get("valueString")
    if boolean is not None and type(boolean) is not bool:
        raise _Invalid("valueBoolean: not a boolean")
    if string is not None and type(string) is not str:
        raise _Invalid("valueString: not a string")
    if string is None and concept is not None and not value_codings:
        string = concept.get("text")
        if string is not None and type(string) is not str:
            raise _Invalid("valueCodeableConcept.text: not a string")
    if raw.get("status") in VOID_OBSERVATION_STATUS:
        return []
    other = next((name for name in OTHER_VALUES if raw.get(name) is not None), None)
    present = feature_presence(boolean, [p for p in value_codings if p[0] != "hpo"], string, interpretation, other)
    return [CodedFact("condition", "hpo", term, when, not present) for term in terms]


def _check_standing(raw: dict[str, Any]) -> None:
    """The elements :func:`datasets.fhir_entry_rules.patient_standing` reads, checked as the validator would."""
    if "deceasedBoolean" in raw and "deceasedDateTime" in raw:
        raise _Invalid("deceased[x]: more than one of deceasedBoolean, deceasedDateTime")
    for element in ("deceasedBoolean", "active"):
        if element in raw and type(raw[element]) is not bool:
            raise _Invalid(f"{element}: not a boolean")
    _date(raw.get("deceasedDateTime"), "deceasedDateTime")
    for i, link in enumerate(_list(raw.get("link", []), "link")):
        link = _obj(link, f"link.{i}")
        _optional_str(link.get("type"), f"link.{i}.type")
        _optional_str(_obj(link.get("other", {}), f"link.{i}.other").get("reference"), f"link.{i}.other.reference")


def _check(raw: dict[str, Any], rtype: str) -> None:
    if (problem := invalid_id(raw.get("id"))) is not None:
        raise _Invalid(problem)
    for element in REQUIRED.get(rtype, ()):
        value = raw.get(element)
        if value is None or value == "" or value == [] or value == {}:
            raise _Invalid(f"{element}: field required")


def records_from_resources_fast(
    resources: Iterable[tuple[Any, Any]],
    source: str,
    name: Callable[[Any], str] = str,
    full_urls: Mapping[Any, str] | None = None,
    one_bundle: bool = False,
) -> Iterator[ChildRecord | RecordError]:
    """Group ``(where, resource-dict)`` pairs by patient and yield one record per Patient.

    As :func:`datasets.fhir_emr.records_from_resources`: a bad resource that names its Patient is
    listed on that child's record (``dropped``: the record is incomplete), any other is a record error;
    the errors come first, then the records in the order of their Patients, then the resources whose
    Patient is not in the input. ``name(where)`` is the text that names a resource in a report, made
    only when one is reported (formatting every resource's name cost more than reading its date).
    ``full_urls``: the Bundle entries' ``fullUrl`` by key, so that a resource referring to its Patient by
    the entry's ``urn:uuid:`` finds it (:func:`full_url_aliases`). ``one_bundle``: the resources are one Bundle's, and
    those that name no Patient of it are listed on the record of its only Patient (:func:`unowned_in_bundle`).
    """
    patients: dict[str, ChildRecord] = {}
    pending: dict[str, list[list[CodedFact] | list[Measurement]]] = {}
    errors: list[RecordError] = []
    dropped: dict[str, list[DroppedEntry]] = {}
    aliases: dict[str, str] = {}  # a Patient entry's fullUrl id -> its Patient.id
    unowned = unread_patients = 0  # resources naming no Patient the reader can find; Patients not read
    kinds = KINDS
    for key, raw in resolve_references(resources, full_urls, name):
        if not isinstance(raw, dict):
            continue
        rtype = raw.get("resourceType")
        if rtype not in RESOURCE_TYPES:
            continue
        try:
            _check(raw, rtype)
            if rtype == "Observation":
                ref = _reference(raw)
                entries: list[CodedFact] | list[Measurement] = _observation(raw)
            elif rtype != "Patient":
                ref = _reference(raw)
                entries = _facts(raw, kinds[rtype])
            else:
                birth = _date(raw.get("birthDate"), "birthDate", "date")
                gender = raw.get("gender")
                if gender is not None and not isinstance(gender, str):
                    raise _Invalid("gender: not a code")
                extras = _patient_extras(raw)
                _check_standing(raw)
        except (_Invalid, Unreadable) as exc:
            where = name(key)
            verb = "unread" if isinstance(exc, Unreadable) else "invalid"
            entry, reason = f"{where} {rtype}/{raw.get('id', '?')}", f"{verb} {rtype}: {exc}"
            owner = _owner(raw) if rtype != "Patient" else None
            if owner is not None:  # the child's record is read without it, and says so (incomplete)
                facts = tuple(exc.facts) if isinstance(exc, Unreadable) else ()
                dropped.setdefault(owner, []).append(DroppedEntry(entry, reason, facts))
            else:
                unowned, unread_patients = unowned + (rtype != "Patient"), unread_patients + (rtype == "Patient")
                errors.append(RecordError(source, entry, reason))
            continue
        if rtype == "Patient":
            approximate = birth is None and (birth := month_only_birth(raw.get("birthDate"))) is not None
            if birth is None:
                unread_patients += 1
                errors.append(RecordError(source, f"{name(key)} Patient/{raw.get('id', '?')}", no_birth_date(raw.get("birthDate"))))
                continue
            sex, unread_sex = sex_of(gender, "gender")
            sex = sex_for_growth(sex, raw.get("extension"))
            full_url = full_urls.get(key) if full_urls else None
            pid = str(raw.get("id") or (reference_key(full_url) if full_url else name(key)))
            if pid in patients:  # the same child again: the first read stands (datasets/fhir_entry_rules.py)
                if (repeat := repeated_patient(patients[pid], birth, sex, f"{name(key)} Patient/{pid}")) is not None:
                    patients[pid].dropped.append(repeat)
                continue
            patients[pid] = ChildRecord(pid, birth, sex, source=source, **extras)  # type: ignore[arg-type]
            patients[pid].deceased, patients[pid].inactive = patient_standing(raw)
            if approximate:
                patients[pid].dropped.append(DroppedEntry(f"{name(key)} Patient/{raw.get('id', '?')}", MONTH_ONLY_BIRTH))
            if unread_sex:
                patients[pid].dropped.append(DroppedEntry(f"{name(key)} Patient/{raw.get('id', '?')}", unread_sex))
            if full_url and reference_key(full_url) != pid:
                aliases[reference_key(full_url)] = pid
            continue
        if ref is None:
            unowned += 1
            errors.append(RecordError(source, f"{name(key)} {rtype}/{raw.get('id', '?')}", no_subject(raw, rtype)))
            continue
        bucket = pending.get(ref)
        if bucket is None:
            pending[ref] = [entries]
        else:
            bucket.append(entries)
    yield from errors
    merge_aliases(aliases, pending, dropped)
    unowned += sum(len(v) for group in (pending, dropped) for k, v in group.items() if k not in patients)
    if one_bundle and unowned and len(patients) == 1 and not unread_patients:  # the Bundle's only child
        next(iter(patients.values())).dropped.append(unowned_in_bundle(unowned))
    for pid, record in patients.items():
        lost = dropped.pop(pid, [])
        record.dropped.extend(lost)
        record.facts.extend(fact for entry in lost for fact in entry.facts)  # no finding, but maybe a diagnosis
        for entries in pending.pop(pid, []):
            if entries and type(entries[0]) is Measurement:
                record.measurements.extend(entries)  # type: ignore[arg-type]
            else:
                record.facts.extend(entries)  # type: ignore[arg-type]
        yield record
    for ref, items in pending.items():
        yield RecordError(source, f"{len(items)} resources", f"reference a Patient not in the input ({_hash(ref)})")
    for ref, lost in dropped.items():
        for lost_entry in lost:
            yield RecordError(
                source, lost_entry.entry, f"{lost_entry.reason}; references a Patient not in the input ({_hash(ref)})"
            )


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def not_utf8(data: bytes, source: str, *, offset: int | None = 0, line: int | None = None) -> ExtractError | None:
    """The error that stops a FHIR extract whose ``data`` (from byte ``offset`` of the file ``source``; None: not
    known, ``line`` then says where) is not UTF-8 text, or None when it is. JSON is UTF-8 (RFC 8259); read as
    anything else, a Windows-1252 name had made its Patient "not JSON", the child unscreened and its resources
    "a Patient not in the input", with the run's exit code 0."""
    if data.isascii() and b"\x00" not in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start
    else:
        if b"\x00" not in data:
            return None
        at = data.index(b"\x00")  # a NUL byte, which UTF-8 JSON never holds: UTF-16 without a byte-order mark
    where = f"line {line}, " if line is not None else ""
    where += f"byte offset {offset + at}" if offset is not None else f"byte {at} of the line"
    at_start = offset == 0 or (offset is None and line == 1)
    if (at_start and data.startswith(_UTF16_BOMS)) or b"\x00" in data[:4]:
        return ExtractError(
            f"{source} is UTF-16 text, not UTF-8 (byte 0x{data[at]:02x} at {where}): nothing of it was screened; "
            "export it as UTF-8, or convert it: iconv -f UTF-16 -t UTF-8 (Windows PowerShell 5.1's `>` writes "
            "UTF-16: use Out-File -Encoding utf8)"
        )
    return ExtractError(
        f"{source} is not UTF-8 text (byte 0x{data[at]:02x} at {where} cannot be read): nothing of it was screened; "
        "export it as UTF-8, or convert it, e.g. iconv -f WINDOWS-1252 -t UTF-8"
    )


def utf8_lines(handle: Iterable[bytes], source: str) -> Iterator[tuple[int, bytes]]:
    """A file's lines numbered from 1, a byte-order mark before the first read past (``numbered_lines``), each
    checked to be UTF-8 text where its byte offset in the file is known (:func:`not_utf8`)."""
    offset = 0
    for number, raw in enumerate(handle, start=1):
        line = raw.removeprefix(UTF8_BOM) if number == 1 else raw
        if (error := not_utf8(line, source, offset=offset + len(raw) - len(line), line=number)) is not None:
            raise error
        offset += len(raw)
        yield number, line


def records_from_bundle_fast(bundle: Any, source: str, where: str = "") -> Iterator[ChildRecord | RecordError]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        yield RecordError(source, where or "input", "not a FHIR Bundle")
        return
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield RecordError(source, where or "input", "invalid Bundle: entry is not an array")
        return
    records = records_from_resources_fast(
        ((i, e.get("resource") or {}) for i, e in enumerate(entries) if isinstance(e, dict)),
        source,
        lambda i: f"{where}entry[{i}]",
        full_url_keys(entries),
        one_bundle=True,
    )
    yield from with_later_pages(records, bundle.get("link"), where)
    for inner_where, inner in bundles_within(entries, where):
        yield from records_from_bundle_fast(inner, source, inner_where) if inner_where.count("entry[") <= 2 else [
            RecordError(source, inner_where.strip(), NESTED_TOO_DEEP)]


# A Bundle of Bundles (a collection of each child's Bundle or document, a search over Bundles) is read Bundle by Bundle,
# two levels deep; its children had been read as nothing, without a word (the Bundle entries were skipped as a type
# screening does not read).
NESTED_TOO_DEEP = "a Bundle within a Bundle within a Bundle: not read (give each child's Bundle, or a Bundle of them)"


def bundles_within(entries: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The Bundles among a Bundle's ``entries``, each with the place that names it in a report."""
    if not isinstance(entries, list):
        return []
    return [
        (f"{where}entry[{i}] ", e["resource"])
        for i, e in enumerate(entries)
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Bundle"
    ]


def with_later_pages(
    records: Iterable[ChildRecord | RecordError], links: Any, where: str = ""
) -> Iterator[ChildRecord | RecordError]:
    """``records`` of a Bundle whose ``link`` is ``links``, each listing the Bundle's later pages as unread when it is
    one page of a search result (:func:`datasets.fhir_entry_rules.later_pages`): the child is ``incomplete``."""
    reason = later_pages(links)
    for item in records:
        if reason is not None and isinstance(item, ChildRecord):
            item.dropped.append(DroppedEntry(f"{where}Bundle.link", reason))
        yield item


def records_from_ndjson_lines(
    lines: Iterable[tuple[int, bytes]], source: str, full_validation: bool = False
) -> Iterator[ChildRecord | RecordError]:
    """Records from numbered NDJSON lines: each a Bundle (streamed), or a loose resource (grouped at the
    end); ``full_validation`` reads them with :mod:`datasets.fhir_emr` (every element validated).

    A Bundle line with nothing to report is read by the typed decoder
    (:mod:`datasets.fhir_bundle_decoder`); any other line resource by resource, with the same result."""
    from_bundle, from_resources = records_from_bundle_fast, records_from_resources_fast
    if full_validation:
        from datasets.fhir_emr import records_from_bundle, records_from_resources

        from_bundle, from_resources = records_from_bundle, records_from_resources  # type: ignore[assignment]
    loose: list[tuple[str, Any]] = []
    typed = BundleLineReader(source)
    for number, line in lines:
        if not line.strip():
            continue
        if not full_validation:
            records = typed.records(line)  # None: read it resource by resource
            if records is not None:
                yield from records
                continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if (error := not_utf8(line, source, offset=None, line=number)) is not None:
                raise error from exc
            yield RecordError(source, f"line {number}", f"not JSON: {exc.msg}")
            continue
        if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
            yield from from_bundle(obj, source, where=f"line {number} ")
        else:
            loose.append((f"line {number}", obj))
    if loose:
        yield from from_resources(loose, source)


def read_fhir_fast(path: Path) -> Iterator[ChildRecord | RecordError]:
    """Records from a Bundle ``.json`` or an ``.ndjson`` file, as :func:`datasets.fhir_emr.read_fhir`."""
    source = path.name
    if path.suffix.lower() != ".ndjson":
        raw = path.read_bytes()
        data = raw.removeprefix(UTF8_BOM)
        records = BundleLineReader(source).records(data)
        if records is not None:
            yield from records
            return
        try:
            bundle = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if (error := not_utf8(data, source, offset=len(raw) - len(data))) is not None:
                raise error from exc
            yield RecordError(source, "file", f"not JSON: {exc}")
            return
        yield from records_from_bundle_fast(bundle, source)
        return
    with path.open("rb") as handle:
        yield from records_from_ndjson_lines(utf8_lines(handle, source), source)


def _hash(value: str) -> str:
    return "patient " + hashlib.sha256(value.encode()).hexdigest()[:12]
