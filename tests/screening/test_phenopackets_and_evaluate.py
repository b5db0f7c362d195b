"""Real published phenopackets: reading, projection into EMR records, and the evaluation command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from datasets.phenopackets import iso_age_days, iter_phenopackets, read_phenopacket
from screening.findings import CodeMaps, extract_findings
from screening.simulate import CaseProjector, simulate_controls
from service.cli import main


def test_iso_durations() -> None:
    assert iso_age_days("P2Y6M") == 913
    assert iso_age_days("P10D") == 10
    assert iso_age_days("P") is None and iso_age_days("2 years") is None


def test_reading_a_real_case(phenopackets: Path) -> None:
    case = read_phenopacket(phenopackets / "KMT2D" / "PMID_24739679_patient_K1.json")
    assert case.diseases == ("OMIM:147920",)  # Kabuki syndrome 1
    assert case.age_days is not None and case.age_days < 7 * 365.25
    assert any(f.excluded for f in case.features) and any(not f.excluded for f in case.features)


def test_projection_keeps_cases_under_7_and_yields_dated_codes(phenopackets: Path, maps: CodeMaps) -> None:
    projector = CaseProjector(maps)
    rng = random.Random(1)
    cases = list(iter_phenopackets(phenopackets))
    adult = next(c for c in cases if c.diseases == ("OMIM:601718",))  # the 34-year-old ABCA4 case
    assert projector.project(adult, rng) is None
    kabuki = next(c for c in cases if c.id == "PMID_24739679_patient_K1")
    record, as_of = projector.project(kabuki, rng)  # type: ignore[misc]
    assert record.facts and all(f.date is None or record.birth_date <= f.date <= as_of for f in record.facts)
    child = extract_findings(record, maps, as_of)
    assert child.status == "screened" and len(child.present) >= 5


def test_controls_are_ordinary_children_under_7(maps: CodeMaps) -> None:
    children = list(simulate_controls(maps, 200, seed=3))
    assert all(0 < (as_of - r.birth_date).days < 7 * 365.25 for r, as_of in children)
    statuses = {extract_findings(r, maps, as_of).status for r, as_of in children}
    assert statuses == {"screened"}
    assert any(f.code == "P07.3" for r, _ in children for f in r.facts)  # prematurity among the hard negatives


def test_evaluate_command_prints_the_metrics_as_json(phenopackets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["screening", "evaluate", "--phenopackets", str(phenopackets), "--controls", "300", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_cases"] == 12 and report["n_controls"] == 300  # the adult case is left out
    for key in ("sensitivity_at_budget", "auprc", "ppv", "top1", "top10"):
        assert 0.0 <= report[key] <= 1.0, key
        assert key in report["baselines"]["unweighted_feature_sum"]
        assert key in report["baselines"]["organ_system_count"]
    assert report["n_diseases"] == 7 and report["folds"] == 5


@pytest.mark.shared_data
def test_every_shared_phenopacket_reads(shared_data: Path) -> None:
    folder = shared_data / "rare-disease" / "phenopackets"
    cases = list(iter_phenopackets(folder))
    # The folder grows in waves (2,428 cases, then 5,225): every file it holds must read.
    assert len(cases) == len(list(folder.rglob("*.json"))) >= 2428
    under_7 = [c for c in cases if c.age_days is not None and c.age_days < 7 * 365.25]
    assert len(under_7) >= 500 and 0.1 <= len(under_7) / len(cases) <= 0.5
