"""Read children's records from FHIR R4 (validated with the ``fhir.resources`` R4B models).

Inputs: one Bundle (JSON), or NDJSON where each line is a Bundle (one child per line: streams with
flat memory) or a single resource (a bulk-export file: grouped per patient in memory). Patient,
Condition, Observation, Encounter, Procedure and MedicationRequest are read; other resources are
skipped. A resource that does not validate and names its Patient is listed on that child's record as a
dropped entry (the record is then incomplete, see ``datasets/emr_records.py``); one that names no known
Patient becomes a :class:`RecordError`; the rest goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from datasets.emr_records import (
    DECEASED_UNDATED,
    ChildRecord,
    CodedFact,
    DroppedEntry,
    FactKind,
    Measurement,
    RecordError,
    bound_unread,
    code_system,
    sex_of,
)
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
from datasets.fhir_fast import NESTED_TOO_DEEP, bundles_within, child_name, not_utf8, utf8_lines, with_later_pages
from datasets.fhir_primitives import UTF8_BOM, full_url_keys, invalid_id, merge_aliases, parse_date, reference_key

__all__ = ["read_fhir", "records_from_bundle", "records_from_resources", "record_to_bundle", "fhir_id"]

logger = logging.getLogger(__name__)

_KINDS: dict[str, FactKind] = {
    "Condition": "condition",
    "Procedure": "procedure",
    "Encounter": "encounter",
    "MedicationRequest": "medication",
}
_READ = {"Patient", "Observation", *_KINDS}


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        # fhir.resources keeps as text what Python's datetime cannot hold but FHIR allows: a leap second
        # (23:59:60), which the other readers read as its date; a year or a month stays no full date.
        try:
            return parse_date(value, "dateTime")
        except ValueError:
            return None
    return None


def _codings(concepts: Iterable[Any] | None) -> list[tuple[str, str]]:
    out = []
    for concept in concepts or []:
        if concept is None:
            continue
        for coding in concept.coding or []:
            if coding.code:
                out.append((code_system(coding.system), str(coding.code)))
    return out


def _raw_patient_ref(raw: dict[str, Any]) -> str | None:
    """The Patient a resource that failed validation names, read from the plain JSON."""
    for key in ("subject", "patient"):
        value = raw.get(key)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference:
            return reference_key(reference)
    return None


def _patient_extras(resource: Any) -> dict[str, str]:
    """Name, record number and the references that say whose patient the child is."""
    # the rule both readers share (datasets.fhir_fast.child_name), on the validated names as FHIR JSON
    name = child_name(resource.model_dump(mode="json", include={"name"}).get("name") or [])
    mrn = ""
    for identifier in resource.identifier or []:
        codes = [c.code for c in (identifier.type.coding or [])] if identifier.type else []
        if "MR" in codes or (not mrn and identifier.use == "usual"):
            mrn = str(identifier.value or "")
    practitioners = [r.reference for r in resource.generalPractitioner or [] if r.reference]
    organization = resource.managingOrganization.reference if resource.managingOrganization else ""
    return {
        "name": name,
        "mrn": mrn,
        "practitioner": next((r for r in practitioners if "Practitioner" in r), practitioners[0] if practitioners else ""),
        "organization": organization or next((r for r in practitioners if "Organization" in r), ""),
    }


def _patient_ref(resource: Any) -> str | None:
    subject = getattr(resource, "subject", None) or getattr(resource, "patient", None)
    reference = getattr(subject, "reference", None) if subject is not None else None
    if not reference:
        return None
    return reference_key(reference)


def _facts(resource: Any, kind: FactKind) -> list[CodedFact]:
    if kind == "condition":
        onset_date = _as_date(resource.onsetDateTime)
        onset = None if onset_date or resource.onsetAge is None else onset_age_days(resource.onsetAge.model_dump(mode="json"))
        when = onset_date or (None if onset is not None else _as_date(resource.recordedDate))
        status = [code for _, code in _codings([resource.verificationStatus])] if resource.verificationStatus else []
        if VOID_VERIFICATION in status:
            return []
        codings = _codings([resource.code])
        raw_concept = resource.code.model_dump(mode="json") if resource.code else {}
        check_condition_codes(codings, raw_concept, status, when, onset)
        refuted, unconfirmed = condition_certainty(status, raw_concept.get("coding") or [])
        names = condition_displays(raw_concept)
        return [
            CodedFact(kind, s, c, when, refuted, unconfirmed, name, onset) for (s, c), name in zip(codings, names, strict=True)
        ]
    if kind == "procedure":
        when = _as_date(resource.performedDateTime) or _as_date(
            resource.performedPeriod.start if resource.performedPeriod else None
        )
        return [CodedFact(kind, s, c, when) for s, c in _codings([resource.code])]
    if kind == "encounter":
        when = _as_date(resource.period.start if resource.period else None)
        concepts = list(resource.type or []) + [resource.serviceType]
        return [CodedFact(kind, s, c, when) for s, c in _codings(concepts)]
    when = _as_date(resource.authoredOn)
    if resource.medicationReference is not None:  # not resolved (resolve_medication_references)
        reference = resource.medicationReference
        raise Unreadable(unresolved_medication({"reference": reference.reference, "display": reference.display}))
    concept = resource.medicationCodeableConcept
    return [CodedFact(kind, s, c, when) for s, c in _codings([concept])]


def _observation(resource: Any) -> list[Measurement] | list[CodedFact]:
    """Measurements (the value's and each component's LOINC-coded quantity), a phenotypic feature
    (:mod:`datasets.fhir_entry_rules`; Unreadable when its value says neither present nor absent), or nothing."""
    period = resource.effectivePeriod
    when = (
        _as_date(resource.effectiveDateTime)
        or _as_date(resource.effectiveInstant)
        or _as_date(period.start if period else None)
        or _as_date(resource.issued)
    )
    codings = _codings([resource.code])
    quantity, components = resource.valueQuantity, resource.component
    if resource.status in VOID_OBSERVATION_STATUS:
        return []
    if quantity is None:
        if gestation := gestation_as_text(codings, resource.valueString, when):
            return gestation
        features = _feature(resource, codings, when)
        if features or components is None:
            return features
    elif any(system == "hpo" for system, _ in codings):
        raise Unreadable("valueQuantity: neither present nor absent")
    measured = [] if quantity is None else [(codings, quantity, "valueQuantity")]
    measured += [(_codings([c.code]), c.valueQuantity, f"component.{i}.valueQuantity")
                 for i, c in enumerate(components or []) if c.valueQuantity is not None]
    out = []
    for coded, value, path in measured:
        if value.value is None or not any(system == "loinc" for system, _ in coded):
            continue
        if when is None:
            raise Unreadable(UNDATED)
        number = float(value.value)
        if value.comparator:
            raise Unreadable(f"{path} {bound_unread(value.comparator, f'{number:g}', value.code or value.unit or '')}")
        if not math.isfinite(number):  # a decimal beyond any float ("1e400"), which the model validation lets by
            raise Unreadable(f"valueQuantity.value {str(value.value)[:30]}: beyond any measurement")
        unit = value.code or value.unit or ""
        out += [Measurement(code, number, unit, when) for system, code in coded if system == "loinc"]
    return out


def _feature(resource: Any, codings: list[tuple[str, str]], when: date | None) -> list[CodedFact]:
    concept = resource.valueCodeableConcept
    value_codings = _codings([concept])
    terms = [c for s, c in codings if s == "hpo"] + [c for s, c in value_codings if s == "hpo"]
    if not terms:
        return []
    string = resource.valueString
    if string is None and concept is not None and not value_codings:
        string = concept.text
    other = next((name for name in OTHER_VALUES if getattr(resource, name, None) is not None), None)
    present = feature_presence(
        resource.valueBoolean,
        [p for p in value_codings if p[0] != "hpo"],
        string,
        _codings(resource.interpretation or []),
        other,
    )
    return [CodedFact("condition", "hpo", term, when, not present) for term in terms]


def records_from_resources(
    resources: Iterable[tuple[str, dict[str, Any]]],
    source: str,
    full_urls: Mapping[str, str] | None = None,
    one_bundle: bool = False,
) -> Iterator[ChildRecord | RecordError]:
    """Group ``(where, resource-dict)`` pairs by patient and yield one record per Patient (``full_urls``: a
    Bundle's Patient entries' ``fullUrl`` by ``where``, for references by ``urn:uuid:``; ``one_bundle``: as
    :func:`datasets.fhir_fast.records_from_resources_fast`)."""
    patients: dict[str, ChildRecord] = {}
    pending: dict[str, list[list[Measurement] | list[CodedFact]]] = {}
    errors: list[RecordError] = []
    dropped: dict[str, list[DroppedEntry]] = {}
    aliases: dict[str, str] = {}
    order: list[str] = []
    unowned = unread_patients = 0  # resources naming no Patient the reader can find; Patients not read
    for where, raw in resolve_references(resources, full_urls):
        rtype = raw.get("resourceType") if isinstance(raw, dict) else None
        if rtype not in _READ:
            continue
        name = f"{rtype}/{raw.get('id', '?')}"
        try:
            if (problem := invalid_id(raw.get("id"))) is not None:  # as datasets.fhir_fast reads it
                raise ValueError(problem)
            resource: Any = get_fhir_model_class(rtype).model_validate(raw)
        except (ValidationError, ValueError, TypeError, RecursionError) as exc:
            # RecursionError: an extension nested a few hundred deep (10 kB) exhausts the validator's stack; it had
            # escaped as a 500 and left every other child of the Bundle unscreened.
            owner = _raw_patient_ref(raw) if rtype != "Patient" else None
            if owner is not None:
                dropped.setdefault(owner, []).append(DroppedEntry(f"{where} {name}", f"invalid {rtype}: {_short(exc)}"))
            else:
                unowned, unread_patients = unowned + (rtype != "Patient"), unread_patients + (rtype == "Patient")
                errors.append(RecordError(source, f"{where} {name}", f"invalid {rtype}: {_short(exc)}"))
            continue
        if rtype == "Patient":
            birth = _as_date(resource.birthDate)
            approximate = birth is None and (birth := month_only_birth(resource.birthDate)) is not None
            if birth is None:
                unread_patients += 1
                errors.append(RecordError(source, f"{where} {name}", no_birth_date(resource.birthDate)))
                continue
            sex, unread_sex = sex_of(resource.gender, "gender")
            if resource.extension:
                sex = sex_for_growth(sex, resource.model_dump(mode="json", include={"extension"}).get("extension"))
            full_url = full_urls.get(where) if full_urls else None
            pid = str(resource.id or (reference_key(full_url) if full_url else where))
            if pid in patients:  # the same child again: the first read stands (datasets/fhir_entry_rules.py)
                if (repeat := repeated_patient(patients[pid], birth, sex, f"{where} {name}")) is not None:
                    patients[pid].dropped.append(repeat)
                continue
            patients[pid] = ChildRecord(pid, birth, sex, source=source, **_patient_extras(resource))  # type: ignore[arg-type]
            # read from the validated resource (it reads "deceasedBoolean": "yes" as true, as pydantic does)
            patients[pid].deceased, patients[pid].inactive = patient_standing(
                resource.model_dump(mode="json", include={"deceasedBoolean", "deceasedDateTime", "active", "link"})
            )
            if approximate:
                patients[pid].dropped.append(DroppedEntry(f"{where} {name}", MONTH_ONLY_BIRTH))
            if unread_sex:
                patients[pid].dropped.append(DroppedEntry(f"{where} {name}", unread_sex))
            order.append(pid)
            if full_url and reference_key(full_url) != pid:
                aliases[reference_key(full_url)] = pid
            continue
        ref = _patient_ref(resource)
        if ref is None:
            unowned += 1
            errors.append(RecordError(source, f"{where} {name}", no_subject(raw, rtype)))
            continue
        try:
            entries: list[Measurement] | list[CodedFact] = _observation(resource) if rtype == "Observation" else _facts(resource, _KINDS[rtype])
        except Unreadable as exc:
            dropped.setdefault(ref, []).append(DroppedEntry(f"{where} {name}", f"unread {rtype}: {exc}", tuple(exc.facts)))
            continue
        pending.setdefault(ref, []).append(entries)
    yield from errors
    merge_aliases(aliases, pending, dropped)
    unowned += sum(len(v) for group in (pending, dropped) for k, v in group.items() if k not in patients)
    if one_bundle and unowned and len(patients) == 1 and not unread_patients:  # the Bundle's only child
        next(iter(patients.values())).dropped.append(unowned_in_bundle(unowned))
    for pid in order:
        record = patients[pid]
        lost = dropped.pop(pid, [])
        record.dropped.extend(lost)
        record.facts.extend(fact for entry in lost for fact in entry.facts)  # no finding, but maybe a diagnosis
        for read in pending.pop(pid, []):
            if read and isinstance(read[0], Measurement):
                record.measurements.extend(read)  # type: ignore[arg-type]
            else:
                record.facts.extend(read)  # type: ignore[arg-type]
        yield record
    for ref, items in pending.items():
        yield RecordError(source, f"{len(items)} resources", f"reference a Patient not in the input ({_hash(ref)})")
    for ref, lost in dropped.items():
        for entry in lost:
            yield RecordError(source, entry.entry, f"{entry.reason}; references a Patient not in the input ({_hash(ref)})")


def records_from_bundle(bundle: dict[str, Any], source: str, where: str = "") -> Iterator[ChildRecord | RecordError]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        yield RecordError(source, where or "input", "not a FHIR Bundle")
        return
    entries = bundle.get("entry") or []
    records = records_from_resources(
        ((f"{where}entry[{i}]", e.get("resource") or {}) for i, e in enumerate(entries) if isinstance(e, dict)),
        source,
        {f"{where}entry[{i}]": url for i, url in full_url_keys(entries).items()},
        one_bundle=True,
    )
    yield from with_later_pages(records, bundle.get("link"), where)
    for inner_where, inner in bundles_within(entries, where):  # as datasets.fhir_fast reads a Bundle of Bundles
        yield from records_from_bundle(inner, source, inner_where) if inner_where.count("entry[") <= 2 else [
            RecordError(source, inner_where.strip(), NESTED_TOO_DEEP)]


def read_fhir(path: Path) -> Iterator[ChildRecord | RecordError]:
    """Records from a Bundle ``.json`` or an ``.ndjson`` file (see module doc)."""
    source = path.name
    if path.suffix.lower() != ".ndjson":
        raw = path.read_bytes()
        data = raw.removeprefix(UTF8_BOM)  # a byte-order mark read past
        if (error := not_utf8(data, source, offset=len(raw) - len(data))) is not None:
            raise error
        try:
            bundle = json.loads(data)
        except json.JSONDecodeError as exc:
            yield RecordError(source, "file", f"not JSON: {exc}")
            return
        yield from records_from_bundle(bundle, source)
        return
    loose: list[tuple[str, dict[str, Any]]] = []
    with path.open("rb") as handle:
        for number, line in utf8_lines(handle, source):  # a byte-order mark read past; not UTF-8: refused
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RecordError(source, f"line {number}", f"not JSON: {exc.msg}")
                continue
            if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
                yield from records_from_bundle(obj, source, where=f"line {number} ")
            else:
                loose.append((f"line {number}", obj))
    if loose:
        yield from records_from_resources(loose, source)


_SYSTEM_URIS = {
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "snomed": "http://snomed.info/sct",
    "hpo": "http://purl.obolibrary.org/obo/hp.owl",
    "loinc": "http://loinc.org",
    "atc": "http://www.whocc.no/atc",
    "icd11": "http://id.who.int/icd/release/11/mms",
    "orpha": "http://www.orpha.net",
    "omim": "http://www.omim.org",
}


_INVALID_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9.-]")


def fhir_id(value: str) -> str:
    """``value`` as a valid FHIR id (``[A-Za-z0-9-.]{1,64}``): other characters become ``-``, and a long
    value keeps its start and a digest of the whole, so distinct values stay distinct."""
    cleaned = _INVALID_ID_CHARACTERS.sub("-", value) or "id"
    if len(cleaned) <= 64 and cleaned == value:
        return cleaned
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned[:53]}-{digest}"


def record_to_bundle(record: ChildRecord) -> dict[str, Any]:
    """A child's record as a FHIR R4 collection Bundle (for simulated extracts, tests and demos); ids
    are made valid FHIR ids with :func:`fhir_id`."""
    pid = fhir_id(record.patient_id)
    gender = {"M": "male", "F": "female"}.get(record.sex, "unknown")
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "birthDate": record.birth_date.isoformat(), "gender": gender}
    if record.name:
        patient["name"] = [{"text": record.name}]
    if record.mrn:
        patient["identifier"] = [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "value": record.mrn}
        ]
    if record.practitioner:
        patient["generalPractitioner"] = [{"reference": record.practitioner}]
    if record.organization:
        patient["managingOrganization"] = {"reference": record.organization}
    if record.deceased == DECEASED_UNDATED:
        patient["deceasedBoolean"] = True
    elif record.deceased is not None:
        patient["deceasedDateTime"] = record.deceased.isoformat()
    if record.inactive:
        patient["active"] = False  # the reason is the reader's: a replaced-by link's target is not in the record
    entries: list[dict[str, Any]] = [{"resource": patient}]
    subject = {"reference": f"Patient/{pid}"}
    for i, fact in enumerate(record.facts):
        coding: dict[str, Any] = {"coding": [{"system": _SYSTEM_URIS.get(fact.system, fact.system), "code": fact.code}]}
        if fact.display:
            coding["coding"][0]["display"] = fact.display
        if fact.system == "name":  # a Condition read by its name only (datasets.fhir_entry_rules): text, as it came
            coding = {"text": fact.display}
        when = fact.date.isoformat() if fact.date else None
        rid = f"{pid}-{i}"
        if fact.kind == "condition":
            resource: dict[str, Any] = {"resourceType": "Condition", "id": rid, "subject": subject, "code": coding}
            if when:
                resource["onsetDateTime"] = when
            elif fact.onset_days is not None:
                resource["onsetAge"] = {"value": fact.onset_days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}
            if fact.refuted or fact.unconfirmed:
                resource["verificationStatus"] = {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                "code": "refuted" if fact.refuted else "provisional"}]
                }
        elif fact.kind == "procedure":
            resource = {"resourceType": "Procedure", "id": rid, "status": "completed", "subject": subject, "code": coding}
            if when:
                resource["performedDateTime"] = when
        elif fact.kind == "encounter":
            resource = {
                "resourceType": "Encounter",
                "id": rid,
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": subject,
                "serviceType": coding,
            }
            if when:
                resource["period"] = {"start": when}
        else:
            resource = {
                "resourceType": "MedicationRequest",
                "id": rid,
                "status": "active",
                "intent": "order",
                "subject": subject,
                "medicationCodeableConcept": coding,
            }
            if when:
                resource["authoredOn"] = when
        entries.append({"resource": resource})
    for i, m in enumerate(record.measurements):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"{pid}-obs-{i}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": m.loinc}]},
                    "subject": subject,
                    "effectiveDateTime": m.date.isoformat(),
                    "valueQuantity": {"value": m.value, "unit": m.unit, "system": "http://unitsofmeasure.org", "code": m.unit}
                    if m.unit
                    else {"value": m.value},
                }
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}"[:200]
    return str(exc)[:200]


def _hash(value: str) -> str:
    return "patient " + hashlib.sha256(value.encode()).hexdigest()[:12]
