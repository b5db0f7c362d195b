"""From records to findings: the age gate, the exclusions (orphan diagnosis, disease-specific drug,
genetics care) and that suspicion-revealing codes never become features."""

from __future__ import annotations

from datetime import date, timedelta

from datasets.emr_records import CodedFact, Measurement
from screening.findings import CodeMaps, extract_findings
from screening.screener import Screener
from tests.screening.conftest import ordinary_child, syndromic_child

AS_OF = date(2024, 3, 1)


def test_findings_carry_the_age_at_which_they_were_recorded(maps: CodeMaps) -> None:
    child = extract_findings(syndromic_child(), maps, AS_OF)
    assert child.status == "screened"
    by_source = {f.source: f for f in child.findings}
    assert by_source["icd10:Q21.1"].hpo == "HP:0001631" and by_source["icd10:Q21.1"].age_days == 4
    assert by_source["hpo:HP:0000316"].hpo == "HP:0000316"
    growth = [f for f in child.findings if f.source.startswith("growth:lhfa")]
    assert growth and growth[0].hpo == "HP:0004322" and growth[0].age_days == (date(2024, 1, 10) - date(2021, 3, 1)).days


def test_facts_after_the_screening_date_are_ignored(maps: CodeMaps) -> None:
    child = extract_findings(syndromic_child(), maps, date(2021, 3, 3))
    assert {f.source for f in child.findings} == {"icd10:Q35.9"}


def test_age_gate(maps: CodeMaps, screener: Screener) -> None:
    record = ordinary_child()
    assert extract_findings(record, maps, date(2027, 4, 30)).status == "screened"  # 6.99 years
    old = extract_findings(record, maps, date(2027, 5, 1))  # 7 years to the day
    assert old.status == "out_of_age" and old.findings == []
    unborn = extract_findings(record, maps, date(2019, 1, 1))  # not born yet: said so, not as a negative age
    assert (unborn.status, unborn.reason) == ("out_of_age", "birth date 2020-05-01 is after the screening date 2019-01-01")
    result = screener.screen(syndromic_child(), date(2028, 3, 2))
    assert result.status == "out_of_age" and result.risk is None and not result.flagged
    # the 7th birthday as the calendar has it: with two 29 Februaries in the seven years, 2,556 days (the limit
    # counted in days) fall on the day before it, and the child had been "outside 0-7" a day early
    for born, last_day_under_7 in ((date(2019, 3, 2), date(2026, 3, 1)), (date(2020, 2, 29), date(2027, 2, 28)),
                                   (date(2021, 6, 15), date(2028, 6, 14))):
        record.birth_date = born
        assert extract_findings(record, maps, last_day_under_7).status == "screened", born
        assert extract_findings(record, maps, last_day_under_7 + timedelta(days=1)).status == "out_of_age", born


def test_a_child_already_diagnosed_with_an_orphan_disease_is_not_screened(maps: CodeMaps, screener: Screener) -> None:
    record = syndromic_child()
    record.facts.append(CodedFact("condition", "icd10", "Q90.9", date(2021, 3, 2)))  # Down syndrome
    child = extract_findings(record, maps, AS_OF)
    assert child.status == "already_diagnosed" and "ORPHA:870" in child.reason
    assert not screener.screen(record, AS_OF).flagged
    # A refuted diagnosis is not a diagnosis.
    refuted = syndromic_child()
    refuted.facts.append(CodedFact("condition", "icd10", "Q90.9", date(2021, 3, 2), refuted=True))
    assert extract_findings(refuted, maps, AS_OF).status == "screened"


def test_a_phenotype_code_that_orphanet_also_maps_is_a_finding_not_a_diagnosis(maps: CodeMaps) -> None:
    record = ordinary_child()
    record.facts.append(CodedFact("condition", "icd10", "Q21.0", date(2020, 5, 3)))  # isolated VSD is in Orphanet
    child = extract_findings(record, maps, AS_OF)
    assert child.status == "screened" and "HP:0001629" in child.present


def test_disease_specific_drug_excludes_the_child(maps: CodeMaps) -> None:
    record = syndromic_child()
    record.facts.append(CodedFact("medication", "atc", "A16AB02", date(2023, 1, 1)))  # imiglucerase
    child = extract_findings(record, maps, AS_OF)
    assert child.status == "already_diagnosed" and "drug" in child.reason


def test_genetics_care_is_reported_and_never_used_as_a_feature(maps: CodeMaps, screener: Screener) -> None:
    plain = extract_findings(syndromic_child(), maps, AS_OF)
    for fact in (
        CodedFact("encounter", "snomed", "394580004", date(2023, 2, 1)),  # clinical genetics clinic
        CodedFact("procedure", "snomed", "432398000", date(2023, 2, 1)),  # chromosomal microarray
        CodedFact("condition", "icd10", "Z31.5", date(2023, 2, 1)),  # genetic counselling
    ):
        record = syndromic_child()
        record.facts.append(fact)
        child = extract_findings(record, maps, AS_OF)
        assert child.status == "in_genetics_care", fact
        assert child.findings == plain.findings  # identical features: the suspicion leaks nothing
        assert not screener.screen(record, AS_OF).flagged
    record = syndromic_child()
    record.measurements.append(Measurement("51969-4", 1.0, "", date(2023, 2, 1)))  # genetic analysis report
    assert extract_findings(record, maps, AS_OF).status == "in_genetics_care"


def test_labs_and_refuted_findings(maps: CodeMaps) -> None:
    record = ordinary_child()
    record.measurements.append(Measurement("2157-6", 2400, "U/L", date(2023, 1, 1)))  # creatine kinase
    record.measurements.append(Measurement("718-7", 12.5, "g/dL", date(2023, 1, 1)))  # normal haemoglobin
    record.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 1, 1), refuted=True))
    child = extract_findings(record, maps, AS_OF)
    assert "HP:0003236" in child.present and "HP:0001903" not in child.present
    assert child.absent == {"HP:0001250"}


def test_the_syndromic_child_is_flagged_and_the_ordinary_one_is_not(screener: Screener) -> None:
    flagged = screener.screen(syndromic_child(), AS_OF)
    assert flagged.flagged and flagged.risk is not None and flagged.risk >= screener.threshold
    assert flagged.candidates and all(c.matched for c in flagged.candidates)
    assert flagged.drivers and len(flagged.organ_systems) >= 4
    calm = screener.screen(ordinary_child(), AS_OF)
    assert not calm.flagged and calm.risk is not None and calm.risk < 0.01


def test_snomed_codes_map_through_the_hpo_xrefs(maps: CodeMaps) -> None:
    record = ordinary_child()
    record.facts.append(CodedFact("condition", "snomed", "91175000", date(2022, 6, 1)))  # seizure
    record.facts.append(CodedFact("condition", "snomed", "271611007", date(2020, 5, 2)))  # microcephaly
    record.facts.append(CodedFact("condition", "snomed", "1", date(2022, 6, 1)))  # unknown: ignored
    child = extract_findings(record, maps, AS_OF)
    assert {"HP:0001250", "HP:0000252"} <= child.present
    assert {f.source for f in child.findings if f.hpo == "HP:0001250"} == {"snomed:91175000"}


def test_a_codes_remembered_meaning_is_what_the_tables_say(maps: CodeMaps) -> None:
    """Population runs work out each distinct code once (``CodeMaps.meaning``); every code of the shipped
    tables, in every kind and spelling, means what the lookups one by one say."""
    from screening.icd10_map import normalise_icd10

    codes = [("icd10", code) for code, _, _ in maps.icd10.rows[::7]] + [("icd10", c) for c in list(maps.orphan.by_code)[::5]]
    codes += [("icd10", "q210"), ("icd10", " Q21.0 "), ("icd10", "Z99.99")]
    codes += [(system, prefix) for _, system, prefix in maps.suspicion] + [("snomed", s) for s in list(maps.ontology.snomed_to_hpo)[:200]]
    codes += [("hpo", "HP:0000316"), ("hpo", "HP:0000118"), ("loinc", "8302-2"), ("atc", "A16AB02"), ("other", "x")]
    for kind in ("condition", "procedure", "encounter", "medication"):
        for system, code in codes:
            meaning = maps.meaning(kind, system, code)
            icd10_condition = system == "icd10" and kind == "condition"
            assert meaning.category == maps.suspicion_of(system, code, kind)
            assert meaning.orphan == (maps.orphan.lookup(code) if icd10_condition else None)
            assert meaning.congenital == (icd10_condition and normalise_icd10(code).startswith("Q"))
            assert list(meaning.hpo) == maps.to_hpo(CodedFact(kind, system, code, None))  # type: ignore[arg-type]
            assert maps.meaning(kind, system, code) is meaning and meaning.source == f"{system}:{code}"
    for loinc in ["8302-2", "29463-7", "9843-4", "718-7", "no-such", *[p for _, s, p in maps.suspicion if s == "loinc"]]:
        assert maps.lab_meaning(loinc) == (maps.suspicion_of("loinc", loinc) is not None, maps.loinc.get(loinc))


def test_a_snomed_code_of_several_hpo_terms_stands_for_one_reading(maps: CodeMaps) -> None:
    """SNOMED CT 2099007 (haemangioma) is an xref of "Hemangioma" and of "Chorangioma", a placental tumour:
    one SNOMED-coded ordinary child in 20 had the tumour among its findings. Of two nested terms (SNOMED
    microcephaly: "Microcephaly" below "Decreased head circumference") the lower one, counted once."""
    record = ordinary_child()
    record.facts.append(CodedFact("condition", "snomed", "2099007", date(2022, 6, 1)))
    child = extract_findings(record, maps, AS_OF)
    assert "HP:0001028" in child.present and "HP:0100883" not in child.present
    assert maps.ontology.snomed_to_hpo["271611007"] == ["HP:0000252"]


def test_a_common_or_isolated_condition_orphanet_also_maps_is_no_diagnosis(maps: CodeMaps, screener: Screener) -> None:
    """Orphanet maps rare entities to broader ICD-10 codes: impetigo (for bullous impetigo), infantile seborrhoeic
    dermatitis (Leiner disease), a blocked tear duct, glue-ear hearing loss, Bell palsy, and isolated malformations
    (cleft lip and palate, oesophageal atresia) the screener looks for. None takes a child out of screening; a
    genetic diagnosis (neurofibromatosis, osteogenesis imperfecta, haemophilia, SMA) still does."""
    for code in ("L01.0", "L21.1", "Q10.5", "H90.0", "G51.0", "D69.0", "N13.7", "Q37.0", "Q39.0"):
        record = syndromic_child()
        record.facts.append(CodedFact("condition", "icd10", code, date(2022, 5, 2)))
        child = extract_findings(record, maps, AS_OF)
        assert child.status == "screened", (code, child.reason)
        assert screener.screen(record, AS_OF).flagged, code
    # and those malformations are findings, whichever subcategory a site codes
    for code, hpo in (("Q37.1", "HP:0000175"), ("Q37.1", "HP:0000204"), ("Q39.0", "HP:0002032"), ("Q65.1", "HP:0001385"),
                      ("Q41.0", "HP:0002247"), ("Q03.1", "HP:0000238")):
        record = ordinary_child()
        record.facts.append(CodedFact("condition", "icd10", code, date(2022, 5, 2)))
        assert hpo in extract_findings(record, maps, AS_OF).present, code
    for code, orpha in (("Q85.0", "ORPHA:636"), ("Q78.0", "ORPHA:666"), ("D66", "ORPHA:98878"), ("G12.0", "ORPHA:70")):
        record = ordinary_child()
        record.facts.append(CodedFact("condition", "icd10", code, date(2022, 5, 2)))
        child = extract_findings(record, maps, AS_OF)
        assert child.status == "already_diagnosed" and orpha in child.reason, code


def test_codes_of_national_modifications_read_as_their_who_subcategory(maps: CodeMaps) -> None:
    """ICD-10-CM and -GM add characters to the WHO code: CM Q21.10 (atrial septal defect, unspecified) is WHO Q21.1,
    CM E84.11 (cystic fibrosis with meconium ileus) WHO E84.1. Read only as their three-character category, the ASD
    had been nothing and the cystic fibrosis no diagnosis."""
    record = ordinary_child()
    record.facts.append(CodedFact("condition", "icd10", "Q21.10", date(2022, 5, 2)))
    assert "HP:0001631" in extract_findings(record, maps, AS_OF).present
    record.facts.append(CodedFact("condition", "icd10", "E84.11", date(2022, 5, 2)))
    child = extract_findings(record, maps, AS_OF)
    assert child.status == "already_diagnosed" and child.reason.startswith("ORPHA:586")
    # a letter after the code is no finer subcategory: ICD-10-GM's V (suspected) and A (excluded) as some exports
    # append them, so Q90.9V is no Down syndrome diagnosis
    suspected = ordinary_child()
    suspected.facts.append(CodedFact("condition", "icd10", "Q90.9V", date(2022, 5, 2)))
    assert extract_findings(suspected, maps, AS_OF).status == "screened"


def test_everyday_illness_coded_in_snomed_is_no_evidence(screener: Screener) -> None:
    """A primary-care record in SNOMED CT codes everyday illness the simulator's list does not: acute otitis media
    maps to an HPO term below "Otitis media" carrying 8.8 nats, atopic and seborrhoeic dermatitis 5.5 and 6.2.
    Read as evidence, an ordinary toddler with them was flagged for a rare disease."""
    record = ordinary_child()
    for i, code in enumerate(["3110003", "24079001", "50563003", "271807003", "418290006", "30746006", "128045006"]):
        record.facts.append(CodedFact("condition", "snomed", code, date(2021, 6, 1 + i)))
    result = screener.screen(record, AS_OF)
    assert len(result.findings) >= 7 and not result.flagged, result.risk
