"""Records written by other rules than ours screen as ours: phenotypic features as Observations (HL7 Phenomics
Exchange), HPO ids and system URIs as other writers spell them, entries withdrawn as entered in error."""

from __future__ import annotations

import copy
import json
from datetime import date, timedelta
from typing import Any

from datasets.emr_records import ChildRecord, CodedFact, Measurement, RecordError, code_system
from datasets.fhir_bundle_decoder import BundleLineReader
from datasets.fhir_emr import record_to_bundle, records_from_bundle
from datasets.fhir_fast import read_fhir_fast, records_from_bundle_fast
from screening.batch_screen import screen_batch
from screening.findings import CodeMaps
from screening.screener import Screener
from screening.simulate import recode
from tests.screening.conftest import syndromic_child

AS_OF = date(2024, 3, 1)
PRESENT = {"coding": [{"system": "http://loinc.org", "code": "LA9633-4", "display": "Present"}]}
ABSENT = {"coding": [{"system": "http://loinc.org", "code": "LA9634-2", "display": "Absent"}]}


def _hpo_child(maps: CodeMaps) -> ChildRecord:
    """The syndromic child with its diagnoses coded as HPO terms, and one feature excluded."""
    record = recode(syndromic_child(), maps, "hpo")
    assert sum(f.system == "hpo" for f in record.facts) >= 8
    return record


def _as_phenomics_exchange(bundle: dict[str, Any]) -> dict[str, Any]:
    """Each HPO-coded Condition rewritten as a PhenotypicFeature Observation, in another writer's spelling:
    the OBO PURL as system, ``HP_0000316`` ids, presence as the LOINC answer."""
    out = copy.deepcopy(bundle)
    for entry in out["entry"]:
        r = entry["resource"]
        coding = (r.get("code") or {}).get("coding") or [{}]
        if r["resourceType"] != "Condition" or code_system(coding[0].get("system")) != "hpo":
            continue
        refuted = "verificationStatus" in r
        entry["resource"] = {
            "resourceType": "Observation",
            "id": r["id"],
            "status": "final",
            "subject": r["subject"],
            "code": {"coding": [{"system": "http://purl.obolibrary.org/obo/hp",
                                 "code": coding[0]["code"].replace(":", "_")}]},
            "effectiveDateTime": r.get("onsetDateTime"),
            "valueCodeableConcept": ABSENT if refuted else PRESENT,
        }
    return out


def _one(items: Any) -> ChildRecord:
    [record] = [r for r in items if isinstance(r, ChildRecord)]
    return record


def _three_readers(lines: list[dict[str, Any]], tmp_path: Any) -> list[list[ChildRecord]]:
    """The bundles' records as each FHIR reader reads them: full validation, the fast reader, and the typed
    Bundle path (an NDJSON file of the bundles)."""
    path = tmp_path / "extract.ndjson"
    path.write_text("".join(json.dumps(b) + "\n" for b in lines))
    return [
        [_one(records_from_bundle(copy.deepcopy(b), "x")) for b in lines],
        [_one(records_from_bundle_fast(copy.deepcopy(b), "x")) for b in lines],
        [r for r in read_fhir_fast(path) if isinstance(r, ChildRecord)],
    ]


def test_features_recorded_as_observations_screen_as_hpo_coded_conditions(screener: Screener, maps: CodeMaps) -> None:
    ours = record_to_bundle(_hpo_child(maps))
    theirs = _as_phenomics_exchange(ours)
    assert not any(e["resource"]["resourceType"] == "Condition" and "hp" in str(e["resource"]["code"]) for e in theirs["entry"])
    expected = screener.screen(_one(records_from_bundle(ours, "ours")), AS_OF)
    assert expected.flagged and len(expected.findings) >= 8
    for reader in (records_from_bundle, records_from_bundle_fast):
        got = screener.screen(_one(reader(copy.deepcopy(theirs), "theirs")), AS_OF)
        assert got.status == "screened"
        assert got.risk == expected.risk
        assert [(f.hpo, f.excluded) for f in got.findings] == [(f.hpo, f.excluded) for f in expected.findings]


def test_an_excluded_feature_and_a_withdrawn_one_are_not_findings(screener: Screener, maps: CodeMaps) -> None:
    bundle = _as_phenomics_exchange(record_to_bundle(_hpo_child(maps)))
    subject = {"reference": f"Patient/{bundle['entry'][0]['resource']['id']}"}
    seizure = {"resourceType": "Observation", "status": "final", "subject": subject,
               "code": {"coding": [{"system": "https://hpo.jax.org/", "code": "hp:0001250"}]}}
    bundle["entry"] += [
        {"resource": {**seizure, "id": "seizures-excluded", "valueBoolean": False}},
        {"resource": {**seizure, "id": "seizures-withdrawn", "status": "entered-in-error"}},
    ]
    before = screener.screen(_one(records_from_bundle(_as_phenomics_exchange(record_to_bundle(_hpo_child(maps))), "x")), AS_OF)
    for reader in (records_from_bundle, records_from_bundle_fast):
        result = screener.screen(_one(reader(copy.deepcopy(bundle), "x")), AS_OF)
        seizures = [f for f in result.findings if f.hpo == "HP:0001250"]
        assert [f.excluded for f in seizures] == [True]  # the withdrawn entry is not read at all
        assert result.risk == before.risk  # an excluded finding never enters the risk


def test_a_feature_whose_value_says_neither_makes_the_record_incomplete(screener: Screener, maps: CodeMaps) -> None:
    bundle = _as_phenomics_exchange(record_to_bundle(_hpo_child(maps)))
    feature = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                   and e["resource"].get("valueCodeableConcept") == PRESENT)
    del feature["valueCodeableConcept"]
    feature["valueString"] = "possibly"
    for reader in (records_from_bundle, records_from_bundle_fast):
        result = screener.screen(_one(reader(copy.deepcopy(bundle), "x")), AS_OF)
        assert result.status == "incomplete"
        assert [d.entry.split()[-1] for d in result.dropped] == [f"Observation/{feature['id']}"]
        assert "neither present nor absent" in result.dropped[0].reason


def test_system_uris_as_other_writers_spell_them() -> None:
    for uri, short in [
        ("http://hl7.org/fhir/sid/icd-10", "icd10"), ("HTTP://HL7.ORG/fhir/sid/icd-10/", "icd10"),
        ("https://snomed.info/sct", "snomed"), ("urn:oid:2.16.840.1.113883.6.96", "snomed"),
        ("http://purl.obolibrary.org/obo/hp", "hpo"), ("https://human-phenotype-ontology.org/", "hpo"),
        ("urn:oid:2.16.840.1.113883.6.1", "loinc"), ("http://fhir.de/CodeSystem/bfarm/icd-10-gm", "icd10"),
        ("ICD-10-CM", "icd10"), ("SNOMED CT", "snomed"), ("HP", "hpo"),  # a CSV extract's system column
        ("http://example.org/local-codes", "other"), ("", "other"),
    ]:
        assert code_system(uri) == short, uri


def test_hpo_ids_as_other_writers_spell_them(screener: Screener) -> None:
    ontology = screener.ontology
    for spelled in ["HP:0001250", "HP_0001250", "hp:0001250", "0001250", "http://purl.obolibrary.org/obo/HP_0001250"]:
        assert ontology.primary(spelled) == "HP:0001250", spelled
    assert ontology.primary("HP:9999999") is None and ontology.primary("Q21.0") is None


def test_diagnoses_in_a_local_code_system_make_the_record_incomplete_not_healthy(screener: Screener) -> None:
    """The FHIR form of the issue's CSV without its system column: the child must not look healthy."""
    bundle = record_to_bundle(syndromic_child())
    local = 0
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Condition":
            r["code"] = {"coding": [{"system": "http://hospital.example/problem-list", "code": f"P{local}"}]}
            local += 1
    assert local >= 10
    for reader in (records_from_bundle, records_from_bundle_fast):
        result = screener.screen(_one(reader(copy.deepcopy(bundle), "x")), AS_OF)
        assert result.status == "incomplete" and len(result.dropped) == local
        assert all(d.reason.startswith("unread Condition: code: no ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding") for d in result.dropped)


def test_an_hpo_id_the_ontology_does_not_know_is_listed_not_dropped_silently(screener: Screener, maps: CodeMaps) -> None:
    record = _hpo_child(maps)
    known = screener.screen(record, AS_OF)
    record.facts.append(CodedFact("condition", "hpo", "HP:9999999", date(2023, 1, 1)))
    record.facts.append(CodedFact("condition", "hpo", "HP:0000006", date(2023, 1, 1)))  # inheritance: no finding, known
    result = screener.screen(record, AS_OF)
    assert known.status == "screened" and result.status == "incomplete"
    assert [(d.entry, d.reason.split(":")[0]) for d in result.dropped] == [("HPO HP:9999999", "unknown HPO id")]
    assert result.risk == known.risk
    [batched] = screen_batch(screener, [record], AS_OF)  # population runs say it too
    assert batched.status == "incomplete" and batched.dropped == result.dropped and batched.risk == result.risk


def test_growth_in_other_codes_and_units_reads_as_ours(screener: Screener) -> None:
    """Height as LOINC 3137-7 (Body height Measured), weight in pounds: the same growth findings."""
    ours = syndromic_child()
    theirs = copy.deepcopy(ours)
    theirs.measurements = [
        Measurement("3137-7", m.value, m.unit, m.date) if m.loinc == "8302-2" else
        Measurement(m.loinc, round(m.value / 0.4536, 3), "lb", m.date) if m.loinc == "29463-7" else m
        for m in ours.measurements
    ]
    expected = screener.screen(ours, AS_OF)
    growth = [f for f in expected.findings if f.source.startswith("growth")]
    assert {f.hpo for f in growth} >= {"HP:0004322", "HP:0004325"}  # short stature, decreased weight
    got = screener.screen(theirs, AS_OF)
    assert [(f.hpo, f.age_days) for f in got.findings if f.source.startswith("growth")] == [(f.hpo, f.age_days) for f in growth]


def _transaction(bundle: dict[str, Any], patient_id: str | None, reference: str, full_url: str) -> dict[str, Any]:
    """The Bundle as a transaction writer (Synthea) sends it: entries with fullUrls, the Patient named by
    ``reference``, its id ``patient_id`` (None: no id, the server would assign one)."""
    out = copy.deepcopy(bundle)
    out["type"] = "transaction"
    for i, entry in enumerate(out["entry"]):
        r = entry["resource"]
        if r["resourceType"] == "Patient":
            entry["fullUrl"] = full_url
            if patient_id is None:
                del r["id"]
            else:
                r["id"] = patient_id
        else:
            entry["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-{i:012d}"
            r["subject"] = {"reference": reference}
        entry["request"] = {"method": "POST", "url": r["resourceType"]}
    return out


def test_references_as_transaction_bundles_and_servers_write_them(screener: Screener, tmp_path: Any) -> None:
    """Before, a child whose resources named it by urn:uuid was read with no entry at all (screened, nothing
    found) and its resources reported beside the batch as naming no Patient."""
    ours = record_to_bundle(syndromic_child())
    expected = screener.screen(_one(records_from_bundle(ours, "ours")), AS_OF)
    uuid = "6f1d0a52-3c1e-4b8a-9d2e-5a7c8b9e0f11"
    cases = {
        "synthea: id is the fullUrl's uuid": (uuid, f"urn:uuid:{uuid}", f"urn:uuid:{uuid}"),
        "another id than the fullUrl's": ("p-17", f"urn:uuid:{uuid}", f"urn:uuid:{uuid}"),
        "no id": (None, f"urn:uuid:{uuid}", f"urn:uuid:{uuid}"),
        "absolute URL": ("p-17", "https://ehr.example/fhir/Patient/p-17", "https://ehr.example/fhir/Patient/p-17"),
        "versioned reference": ("p-17", "https://ehr.example/fhir/Patient/p-17", "Patient/p-17/_history/3"),
    }
    for label, (pid, full_url, reference) in cases.items():
        bundle = _transaction(ours, pid, reference, full_url)
        path = tmp_path / "extract.ndjson"
        path.write_text(json.dumps(bundle) + "\n")
        for reader in (lambda b: records_from_bundle(b, "x"), lambda b: records_from_bundle_fast(b, "x"),
                       lambda b, p=path: read_fhir_fast(p)):
            items = list(reader(copy.deepcopy(bundle)))
            assert not [i for i in items if isinstance(i, RecordError)], label
            result = screener.screen(_one(items), AS_OF)
            assert result.status == "screened" and result.risk == expected.risk, label
            assert [f.hpo for f in result.findings] == [f.hpo for f in expected.findings], label
        # the typed fast path reads a Bundle whose Patient's fullUrl names its id; it hands the others over
        typed = BundleLineReader("x").records(json.dumps(bundle).encode())
        assert (typed is not None) == (label not in {"another id than the fullUrl's", "no id"}), label


def test_a_birth_date_to_the_month_is_read_as_the_15th_and_said_so(screener: Screener, tmp_path: Any) -> None:
    """Pseudonymised extracts give the birth month only: the child is screened (ages within 15 days), as
    incomplete, with the reason; in FHIR and in a CSV extract alike."""
    from datasets.emr_csv import read_csv_extract

    bundle = record_to_bundle(syndromic_child())
    bundle["entry"][0]["resource"]["birthDate"] = "2021-03"
    for reader in (records_from_bundle, records_from_bundle_fast):
        record = _one(reader(copy.deepcopy(bundle), "x"))
        result = screener.screen(record, AS_OF)
        assert record.birth_date == date(2021, 3, 15) and result.status == "incomplete" and result.flagged
        assert [d.reason for d in result.dropped] == ["birthDate: month only, read as the 15th (ages within 15 days)"]
    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03,F\np2,2021,F\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\np1,2021-03-20,icd10,Q21.1\n")
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    csv_record, year_only = list(read_csv_extract(tmp_path))
    assert isinstance(csv_record, ChildRecord) and csv_record.birth_date == date(2021, 3, 15) and csv_record.incomplete
    assert isinstance(year_only, RecordError) and "invalid patient row" in year_only.reason


def test_lab_values_in_other_units_are_converted_or_listed_not_misread(screener: Screener) -> None:
    """The lab lines are in US units; a European lab's calcium in mmol/L (2.4) read as mg/dL had been
    hypocalcaemia for every child. Converted, the same values mean what they say; a unit that cannot be
    converted is listed as unread. Child by child and in a batch alike."""
    when = date(2023, 6, 1)
    labs = [
        ("17861-6", 2.4, "mmol/L", None),  # calcium, normal
        ("17861-6", 1.6, "mmol/L", "HP:0002901"),  # hypocalcaemia (6.4 mg/dL)
        ("718-7", 115.0, "g/L", None),  # haemoglobin, normal
        ("718-7", 85.0, "g/L", "HP:0001903"),  # anaemia (8.5 g/dL)
        ("718-7", 5.0, "mmol/L", "HP:0001903"),  # anaemia as the Netherlands reports it (8.1 g/dL)
        ("2345-7", 2.0, "mmol/L", "HP:0001943"),  # hypoglycaemia (36 mg/dL)
        ("1742-6", 50.0, "IU/L", None),  # ALT, normal, another spelling of U/L
        ("1742-6", 3.0, "mg/dL", "unread"),  # not an enzyme activity unit
    ]
    expected = {hpo for _, _, _, hpo in labs if hpo not in (None, "unread")}
    record = syndromic_child()
    record.measurements = [Measurement(loinc, value, unit, when) for loinc, value, unit, _ in labs]
    single = screener.screen(record, AS_OF)
    [batched] = screen_batch(screener, [record], AS_OF)
    for result in (single, batched):
        labs_found = [f for f in result.findings if f.source.startswith("loinc:")]
        assert {f.hpo for f in labs_found} == expected
        assert "loinc:17861-6=1.6 mmol/L" in {f.source for f in labs_found}  # the value as recorded, with its unit
        assert result.status == "incomplete" and [(d.entry, d.reason) for d in result.dropped] == [
            ("LOINC 1742-6", "unit 'mg/dL': not convertible to U/L")
        ]
    assert [(f.hpo, f.source) for f in single.findings] == [(f.hpo, f.source) for f in batched.findings]
    assert single.risk == batched.risk


def test_a_growth_value_in_a_unit_of_another_kind_is_listed_not_misread(screener: Screener) -> None:
    """A weight in cm or a height in "stone" cannot be read; an unknown unit was taken as kg or cm before."""
    record = syndromic_child()
    bad = [Measurement("29463-7", 12.0, "cm", date(2023, 1, 5)), Measurement("8302-2", 80.0, "stone", date(2023, 1, 6))]
    record.measurements = [*record.measurements, *bad]
    single = screener.screen(record, AS_OF)
    [batched] = screen_batch(screener, [record], AS_OF)
    for result in (single, batched):
        assert result.status == "incomplete"
        assert [(d.entry, d.reason) for d in result.dropped] == [
            ("LOINC 29463-7", "unit 'cm': not a unit of this measurement"),
            ("LOINC 8302-2", "unit 'stone': not a unit of this measurement"),
        ]
    assert [(f.hpo, f.source) for f in single.findings] == [(f.hpo, f.source) for f in batched.findings]
    assert single.risk == batched.risk == screener.screen(syndromic_child(), AS_OF).risk


def test_a_child_who_has_died_or_a_record_not_in_use_is_not_screened(screener: Screener, tmp_path: Any) -> None:
    """Patient.deceased[x], a merged record (link replaced-by) and Patient.active false, read alike by the full
    validator, the per-resource reader and the typed Bundle path, and the CSV's death_date: never screened,
    never flagged (a paediatrician would be asked to contact the family of a child who has died)."""
    def patient(pid: str, **standing: Any) -> list[dict[str, Any]]:
        bundle = record_to_bundle(syndromic_child(pid))
        bundle["entry"][0]["resource"].update(standing)
        return bundle["entry"]

    entries = (
        patient("alive") + patient("alive-said", deceasedBoolean=False, active=True)
        + patient("died", deceasedDateTime="2023-11-02T04:10:00+01:00") + patient("died-later", deceasedDateTime="2024-06")
        + patient("died-month", deceasedDateTime="2024-03") + patient("died-undated", deceasedBoolean=True)
        + patient("merged", link=[{"other": {"reference": "Patient/alive"}, "type": "replaced-by"}])
        + patient("seealso", link=[{"other": {"reference": "Patient/alive"}, "type": "seealso"}])
        + patient("inactive", active=False)
        + patient("invalid", deceasedBoolean="maybe")
    )
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    path = tmp_path / "extract.ndjson"
    path.write_text(json.dumps(bundle) + "\n")
    read = [
        list(records_from_bundle(copy.deepcopy(bundle), "x")), list(records_from_bundle_fast(copy.deepcopy(bundle), "x")),
        list(read_fhir_fast(path)),
    ]
    assert BundleLineReader("x").records(path.read_bytes().strip()) is None  # handed to the per-resource reader
    for items in read:
        errors = [e for e in items if isinstance(e, RecordError)]
        assert errors[0].record.endswith("Patient/invalid") and "deceasedBoolean" in errors[0].reason  # not a boolean
        records = [r for r in items if isinstance(r, ChildRecord)]
        results = {r.patient_id: screener.screen(r, AS_OF) for r in records}
        assert {pid: (r.status, r.flagged) for pid, r in results.items()} == {
            "alive": ("screened", True), "alive-said": ("screened", True), "seealso": ("screened", True),
            "died": ("deceased", False), "died-later": ("screened", True),  # dies after the screening date
            "died-month": ("deceased", False),  # March 2024: the 1st, so not screened on 1 March
            "died-undated": ("deceased", False), "merged": ("inactive_record", False), "inactive": ("inactive_record", False),
        }
        assert results["died"].reason == "deceased 2023-11-02" and results["died-undated"].reason == "recorded as deceased"
        assert "Patient/alive" in results["merged"].reason and "active is false" in results["inactive"].reason
        batched = screen_batch(screener, records, AS_OF)
        assert [(b.status, b.reason, b.flagged) for b in batched] == [(results[r.patient_id].status,
                results[r.patient_id].reason, results[r.patient_id].flagged) for r in records]
    # our writer keeps what it read
    again = _one(records_from_bundle(record_to_bundle(next(r for r in read[0] if getattr(r, "patient_id", "") == "died")), "y"))
    assert again.deceased == date(2023, 11, 2)

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex,death_date\np1,2021-03-02,F,\np2,2021-03-02,F,2023-05-01\n"
                                           "p3,2021-03-02,F,yes\np4,2021-03-02,F,unknown\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\n" + "".join(
        f"p{i},2022-01-0{i},icd10,Q21.1\n" for i in range(1, 5)))
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    csv_records = list(read_csv_extract(tmp_path))
    assert [screener.screen(r, AS_OF).status for r in csv_records] == ["screened", "deceased", "deceased", "incomplete"]
    assert "death_date 'unknown': not a date" in csv_records[3].dropped[0].reason


def test_a_suspected_rare_disease_is_no_diagnosis_and_the_child_is_screened(screener: Screener, tmp_path: Any) -> None:
    """A Condition whose verificationStatus is provisional, differential or unconfirmed is a suspicion: the child
    is the one the screener is for, not "already diagnosed" (as a confirmed or unqualified code makes it)."""
    def with_down_syndrome(status: str | None) -> dict[str, Any]:
        bundle = record_to_bundle(syndromic_child(f"c-{status}"))
        condition: dict[str, Any] = {"resourceType": "Condition", "id": f"q90-{status}", "subject": {"reference": f"Patient/c-{status}"},
                                     "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q90.9"}]}}
        if status:
            condition["verificationStatus"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]}
        bundle["entry"].append({"resource": condition})
        return bundle

    statuses = [None, "confirmed", "provisional", "differential", "unconfirmed", "refuted"]
    lines = [with_down_syndrome(s) for s in statuses]
    path = tmp_path / "extract.ndjson"
    path.write_text("".join(json.dumps(b) + "\n" for b in lines))
    typed = BundleLineReader("x")
    expected = ["already_diagnosed", "already_diagnosed", "screened", "screened", "screened", "screened"]
    for read in (
        [_one(records_from_bundle(copy.deepcopy(b), "x")) for b in lines],
        [_one(records_from_bundle_fast(copy.deepcopy(b), "x")) for b in lines],
        [_one(typed.records(json.dumps(b).encode()) or []) for b in lines],  # read typed, not handed over
        [r for r in read_fhir_fast(path) if isinstance(r, ChildRecord)],
    ):
        assert [screener.screen(r, AS_OF).status for r in read] == expected
        assert [screener.screen(r, AS_OF).flagged for r in read][2:] == [True] * 4
        assert [f.unconfirmed for r in read for f in r.facts if f.code == "Q90.9"] == [False, False, True, True, True, False]
    # written back as ours, read again: still suspected
    again = _one(records_from_bundle(record_to_bundle(_one(records_from_bundle(lines[2], "x"))), "y"))
    assert [f.unconfirmed for f in again.facts if f.code == "Q90.9"] == [True]

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03-02,F\np2,2021-03-02,F\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code,kind,status\np1,2022-01-01,icd10,Q90.9,condition,\n"
                                            "p2,2022-01-01,icd10,Q90.9,condition,Suspected\n")
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    assert [screener.screen(r, AS_OF).status for r in read_csv_extract(tmp_path)] == ["already_diagnosed", "screened"]
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code,kind,status\np1,2022-01-01,ICD-10-GM,Q90.9,condition,V\n"
                                            "p2,2022-01-01,icd10,Q90.9,condition,G\n")
    assert [screener.screen(r, AS_OF).status for r in read_csv_extract(tmp_path)] == ["screened", "already_diagnosed"]


def test_a_diagnosis_recorded_as_an_orphacode_or_omim_number_is_a_diagnosis(screener: Screener, tmp_path: Any) -> None:
    """German hospitals record ORPHAcodes beside ICD-10-GM, French ones and genetics departments too, OMIM numbers:
    such a Condition had no ICD-10, SNOMED CT or HPO coding and made the record incomplete, and the child was screened
    and flagged for a disease already diagnosed. All three FHIR readers and the CSV read it as the diagnosis."""
    codings = [
        {"system": "http://www.orpha.net", "code": "ORPHA:870"},
        {"system": "https://www.orpha.net/", "code": "870"},
        {"system": "http://www.omim.org", "code": "190685"},
        {"system": "https://omim.org", "code": "#190685"},
        {"system": "http://www.orpha.net", "code": "Down syndrome"},  # not a number: listed as unread, screened
    ]
    lines = []
    for i, coding in enumerate(codings):
        bundle = record_to_bundle(syndromic_child(f"r{i}"))
        bundle["entry"].append({"resource": {"resourceType": "Condition", "id": f"rare-{i}", "subject": {"reference": f"Patient/r{i}"},
                                             "code": {"coding": [coding]}}})
        lines.append(bundle)
    expected = [("already_diagnosed", "ORPHA:870"), ("already_diagnosed", "ORPHA:870"), ("already_diagnosed", "OMIM:190685"),
                ("already_diagnosed", "OMIM:190685"), ("incomplete", "")]
    for read in _three_readers(lines, tmp_path):
        results = [screener.screen(r, AS_OF) for r in read]
        assert [(r.status, r.reason.split()[0] if r.status == "already_diagnosed" else "") for r in results] == expected
        assert not any(r.flagged for r in results[:4]) and results[4].flagged
        assert [d.reason for d in results[4].dropped] == ["not an ORPHAcode or OMIM number"]
        assert [(b.status, b.reason) for b in screen_batch(screener, read, AS_OF)] == [(r.status, r.reason) for r in results]

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03-02,F\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\np1,2022-01-01,ORPHA,558\n")
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    [record] = list(read_csv_extract(tmp_path))
    assert screener.screen(record, AS_OF).reason == "ORPHA:558 recorded as a diagnosis"


def test_an_icd10_gm_diagnosis_marked_suspected_or_excluded_reads_so(screener: Screener, tmp_path: Any) -> None:
    """German profiles carry an ICD-10-GM diagnosis's certainty as an extension on its coding, not in
    verificationStatus: V (suspected) is no diagnosis, A (excluded) is an excluded finding, Z and G read as written.
    Read without it, a suspected Down syndrome had taken the child out of screening and an excluded VSD was a VSD."""
    def condition(pid: str, code: str, certainty: str | None) -> dict[str, Any]:
        coding: dict[str, Any] = {"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "version": "2024", "code": code}
        if certainty:
            coding["extension"] = [{"url": "http://fhir.de/StructureDefinition/icd-10-gm-diagnosesicherheit",
                                    "valueCoding": {"system": "https://fhir.kbv.de/CodeSystem/KBV_CS_SFHIR_ICD_DIAGNOSESICHERHEIT",
                                                    "code": certainty}}]
        return {"resource": {"resourceType": "Condition", "id": f"{pid}-{code}".replace(".", "-"),
                             "subject": {"reference": f"Patient/{pid}"}, "code": {"coding": [coding]}}}

    cases = [("V", "Q90.9"), ("G", "Q90.9"), ("Z", "Q90.9"), (None, "Q90.9"), ("A", "Q21.0"), ("G", "Q21.0")]
    lines = []
    for i, (certainty, code) in enumerate(cases):
        bundle = record_to_bundle(syndromic_child(f"g{i}"))
        bundle["entry"].append(condition(f"g{i}", code, certainty))
        lines.append(bundle)
    broken = record_to_bundle(syndromic_child("g-broken"))
    bad = condition("g-broken", "Q90.9", "V")
    bad["resource"]["code"]["coding"][0]["extension"] = [{"valueCoding": {"code": "V"}}]  # no url: invalid
    broken["entry"].append(bad)
    lines.append(broken)
    for read in _three_readers(lines, tmp_path):
        results = [screener.screen(r, AS_OF) for r in read]
        assert [r.status for r in results] == ["screened", "already_diagnosed", "already_diagnosed", "already_diagnosed",
                                               "screened", "screened", "incomplete"]
        vsd = [[(f.hpo, f.excluded) for f in r.findings if f.source == "icd10:Q21.0"] for r in results[4:6]]
        assert vsd == [[("HP:0001629", True)], [("HP:0001629", False)]]
        assert "extension" in results[6].dropped[0].reason  # the invalid one listed, not guessed at


def test_a_diagnosis_coded_in_snomed_ct_is_read_by_its_name(screener: Screener, tmp_path: Any) -> None:
    """SNOMED CT has no map to rare diseases (Orphanet publishes none, hp.obo's xrefs are phenotypes): a SNOMED-coding
    site's child with a recorded Down syndrome or cystic fibrosis was screened on the syndrome's own findings and
    flagged. The Condition's name (the coding's display, else the concept's text) is read against Orphanet's labels
    of diagnoses, in all three FHIR readers and the CSV; a SNOMED code hp.obo maps to a phenotype stays a finding."""
    snomed = "http://snomed.info/sct"

    def condition(pid: str, code: str, display: str | None, text: str | None = None, status: str | None = None) -> dict[str, Any]:
        coding: dict[str, Any] = {"system": snomed, "code": code}
        if display is not None:
            coding["display"] = display
        concept: dict[str, Any] = {"coding": [coding]}
        if text is not None:
            concept["text"] = text
        resource: dict[str, Any] = {"resourceType": "Condition", "id": f"{pid}-dx", "subject": {"reference": f"Patient/{pid}"},
                                    "code": concept}
        if status:
            resource["verificationStatus"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]}
        return {"resource": resource}

    cases = [
        ("41040004", "Down syndrome", None, None),
        ("41040004", None, "Down's syndrome", None),  # British spelling, as text only
        ("190905008", "Cystic fibrosis (disorder)", None, None),  # the fully specified name's semantic tag
        ("41040004", "Down syndrome", None, "provisional"),  # suspected: no diagnosis, screened
        ("41040004", None, None, None),  # no name written: nothing to read it by
        ("271611007", "Down syndrome", None, None),  # hp.obo maps the code to Microcephaly: a finding
        ("43116000", "Eczema", None, None),  # an everyday illness names no orphan disease
    ]
    lines = []
    for i, (code, display, text, status) in enumerate(cases):
        bundle = record_to_bundle(syndromic_child(f"s{i}"))
        bundle["entry"].append(condition(f"s{i}", code, display, text, status))
        lines.append(bundle)
    expected = ["ORPHA:870", "ORPHA:870", "ORPHA:586", "screened", "screened", "screened", "screened"]
    for read in _three_readers(lines, tmp_path):
        results = [screener.screen(r, AS_OF) for r in read]
        assert [r.reason.split()[0] if r.status == "already_diagnosed" else r.status for r in results] == expected
        assert "named by SNOMED CT 190905008 'Cystic fibrosis (disorder)'" in results[2].reason
        assert all(r.flagged for r in results[3:])  # the syndromic child, screened, is flagged
        assert "HP:0000252" in {f.hpo for f in results[5].findings}
        assert [(b.status, b.reason) for b in screen_batch(screener, read, AS_OF)] == [(r.status, r.reason) for r in results]

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03-02,F\np2,2021-03-02,F\n")
    (tmp_path / "diagnoses.csv").write_text(
        "patient_id,date,system,code,display\np1,2022-01-01,SNOMED CT,19346006,Marfan's syndrome\n"
        "p2,2022-01-01,snomed,19346006,\n"
    )
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    first, second = (screener.screen(r, AS_OF) for r in read_csv_extract(tmp_path))
    assert (first.status, first.reason.split()[0], second.status) == ("already_diagnosed", "ORPHA:558", "screened")


def test_a_diagnosis_in_a_code_system_not_read_is_read_by_its_name(screener: Screener, tmp_path: Any) -> None:
    """A Condition in a local code system (or text only) is no finding and makes the record incomplete, as before;
    but when its name (display, else text) names a recorded orphan diagnosis, the child is already diagnosed:
    before, a problem list's "Down syndrome" in a local code left the child screened, and flagged. A suspected or
    refuted one does not count. All three FHIR readers and the CSV."""
    local = "http://hospital.example/problem-list"
    verification = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
    concepts: list[tuple[dict[str, Any], str | None]] = [
        ({"coding": [{"system": local, "code": "P17", "display": "Down syndrome"}]}, None),
        ({"text": "Cystic fibrosis"}, None),  # text only
        ({"coding": [{"system": local, "code": "P18"}], "text": "Marfan's syndrome"}, None),
        # a coding with a display and no code, as a problem list's free entry is written: read as text is
        ({"coding": [{"system": "http://snomed.info/sct", "display": "Down syndrome"}]}, None),
        ({"coding": [{"system": local, "code": "P17", "display": "Down syndrome"}]}, "provisional"),
        ({"coding": [{"system": local, "code": "P17", "display": "Down syndrome"}]}, "refuted"),
        ({"coding": [{"system": local, "code": "P19", "display": "Eczema"}]}, None),
        ({"coding": [{"system": local, "code": "P20"}]}, None),  # no name
    ]
    lines = []
    for i, (concept, status) in enumerate(concepts):
        bundle = record_to_bundle(syndromic_child(f"l{i}"))
        resource: dict[str, Any] = {"resourceType": "Condition", "id": f"local-{i}", "subject": {"reference": f"Patient/l{i}"},
                                    "code": concept}
        if status:
            resource["verificationStatus"] = {"coding": [{"system": verification, "code": status}]}
        bundle["entry"].append({"resource": resource})
        lines.append(bundle)
    expected = ["ORPHA:870", "ORPHA:586", "ORPHA:558", "ORPHA:870", "incomplete", "incomplete", "incomplete", "incomplete"]
    for read in _three_readers(lines, tmp_path):
        results = [screener.screen(r, AS_OF) for r in read]
        assert [r.reason.split()[0] if r.status == "already_diagnosed" else r.status for r in results] == expected
        assert "named by an entry in a code system not read 'Down syndrome'" in results[0].reason
        assert all(r.flagged and [d.reason[:24] for d in r.dropped] == ["unread Condition: code: "] for r in results[4:])
        assert [(b.status, b.reason) for b in screen_batch(screener, read, AS_OF)] == [(r.status, r.reason) for r in results]

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03-02,F\np2,2021-03-02,F\n")
    (tmp_path / "diagnoses.csv").write_text(  # "description", as Synthea's CSV names it
        "patient_id,date,system,code,description\np1,2022-01-01,local,P17,Down syndrome\np2,2022-01-01,local,P19,Eczema\n"
    )
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    records = list(read_csv_extract(tmp_path))
    first, second = (screener.screen(r, AS_OF) for r in records)
    assert (first.status, first.reason.split()[0]) == ("already_diagnosed", "ORPHA:870")
    assert second.status == "incomplete" and second.dropped[0].reason.startswith("unread diagnosis row: unknown code system")
    again = screener.screen(_one(records_from_bundle(record_to_bundle(records[0]), "x")), AS_OF)  # written as text only
    assert (again.status, again.reason) == (first.status, first.reason)


def test_a_diagnosis_coded_in_icd11_is_a_diagnosis_and_other_icd11_entries_are_listed(screener: Screener, tmp_path: Any) -> None:
    """ICD-11 Conditions were unread entries: a child with Down syndrome coded LD40.0 was screened, incomplete, and
    flagged. An ICD-11 code Orphanet maps to diagnoses only is a recorded diagnosis (post-coordinated by its stem); one
    that is not, but whose display names one, is read by the name; any other stays unread (ICD-11 has no map to
    findings here), so the record is still incomplete and says why."""
    icd11 = "http://id.who.int/icd/release/11/mms"
    cases = [("LD40.0", None), ("CA25&XK8G", None), ("8A00.0", "Rett syndrome"), ("1A00", None), ("LD40.0", "")]
    lines = []
    for i, (code, display) in enumerate(cases):
        coding: dict[str, Any] = {"system": icd11, "code": code}
        if display:
            coding["display"] = display
        bundle = record_to_bundle(syndromic_child(f"i{i}"))
        bundle["entry"].append({"resource": {"resourceType": "Condition", "id": f"icd11-{i}", "subject": {"reference": f"Patient/i{i}"},
                                             "code": {"coding": [coding]}}})
        lines.append(bundle)
    lines[4]["entry"][-1]["resource"]["verificationStatus"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "differential"}]}
    expected = ["ORPHA:870", "ORPHA:586", "ORPHA:778", "incomplete", "incomplete"]
    for read in _three_readers(lines, tmp_path):
        results = [screener.screen(r, AS_OF) for r in read]
        assert [r.reason.split()[0] if r.status == "already_diagnosed" else r.status for r in results] == expected
        assert "named by ICD-11 8A00.0 'Rett syndrome'" in results[2].reason
        assert all(r.flagged and r.dropped[0].reason.startswith("unread Condition: code: ICD-11 is read for recorded rare-disease")
                   for r in results[3:])
        assert [(b.status, b.reason) for b in screen_batch(screener, read, AS_OF)] == [(r.status, r.reason) for r in results]

    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-03-02,F\np2,2021-03-02,F\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\np1,2022-01-01,ICD-11,LD40.0\np2,2022-01-01,icd11,1A00\n")
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    first, second = (screener.screen(r, AS_OF) for r in read_csv_extract(tmp_path))
    assert (first.status, first.reason) == ("already_diagnosed", "ORPHA:870 Down syndrome")
    assert second.status == "incomplete" and second.dropped[0].reason == "unread diagnosis row: ICD-11 is read for recorded rare-disease diagnoses only"


def test_a_named_condition_of_a_patient_not_in_the_input_is_one_error_not_two() -> None:
    """What an unread Condition may still say travels with its dropped entry: when the Patient it names is not in the
    input, it is the one record error the entry always was, not a second one for its name."""
    bundle = record_to_bundle(syndromic_child("n1"))
    bundle["entry"].append({"resource": {"resourceType": "Condition", "id": "elsewhere", "subject": {"reference": "Patient/missing"},
                                         "code": {"coding": [{"system": "http://hospital.example/problem-list", "code": "P17",
                                                              "display": "Down syndrome"}]}}})
    for reader in (records_from_bundle, records_from_bundle_fast):
        items = list(reader(copy.deepcopy(bundle), "x"))
        errors = [i for i in items if isinstance(i, RecordError)]
        assert len(errors) == 1 and "references a Patient not in the input" in errors[0].reason
        assert _one(items).patient_id == "n1" and not any(f.system == "name" for f in _one(items).facts)


def test_a_condition_dated_by_the_age_at_onset_is_a_finding_from_that_age(screener: Screener, tmp_path: Any) -> None:
    """``onsetAge`` instead of a date: the finding is the child's from that age, and one with an onset after the
    screening date is not yet a finding. Before, such a Condition was undated and counted whatever the date."""
    child = syndromic_child("o1")  # born 2021-03-02 (about three years old on AS_OF)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        e for e in record_to_bundle(child)["entry"] if e["resource"]["resourceType"] == "Patient"]}
    ages = [({"value": 18, "unit": "months", "system": "http://unitsofmeasure.org", "code": "mo"}, "HP:0000252"),
            ({"value": 5, "unit": "years"}, "HP:0001250"),  # after the screening date: not yet
            ({"value": 2, "unit": "lightyears"}, "HP:0001263")]  # no age: undated, counted as before
    for i, (age, hpo) in enumerate(ages):
        bundle["entry"].append({"resource": {"resourceType": "Condition", "id": f"onset-{i}", "subject": {"reference": "Patient/o1"},
                                             "code": {"coding": [{"system": "http://purl.obolibrary.org/obo/hp.owl", "code": hpo}]},
                                             "onsetAge": age}})
    for read in _three_readers([bundle], tmp_path):
        result = screener.screen(read[0], AS_OF)
        found = {f.hpo: f.age_days for f in result.findings}
        assert found == {"HP:0000252": int(18 * 30.4375), "HP:0001263": None}
        again = screener.screen(_one(records_from_bundle(record_to_bundle(read[0]), "x")), AS_OF)  # written back as days
        assert {f.hpo: f.age_days for f in again.findings} == found


def test_a_placeholder_date_before_birth_leaves_the_finding_undated(screener: Screener) -> None:
    """EHRs write 1900-01-01 for an unknown onset: the finding counts, without the -121 years the page had shown;
    a prenatal diagnosis keeps its date before birth."""
    record = syndromic_child("placeholder")
    record.facts.append(CodedFact("condition", "icd10", "Q04.0", date(1900, 1, 1)))  # agenesis of the corpus callosum
    record.facts.append(CodedFact("condition", "icd10", "Q60.3", record.birth_date - timedelta(days=60)))  # renal hypoplasia
    by_source = {f.source: f.age_days for f in screener.screen(record, AS_OF).findings}
    assert by_source["icd10:Q04.0"] is None and by_source["icd10:Q60.3"] == -60
