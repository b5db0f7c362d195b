"""Population runs: batched screening equals child-by-child screening; Bulk Data folders, bundles and
partitions give the same results; an interrupted run resumes; a Dask cluster gives the single-process
results even when a worker is killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from datasets.emr_records import ChildRecord, CodedFact, DroppedEntry
from datasets.fhir_emr import record_to_bundle
from datasets.fhir_entry_rules import merged_record
from screening.batch_screen import screen_batch
from screening.findings import CodeMaps
from screening.population import RunOptions, run_population
from screening.screener import Screener
from screening.simulate import simulate_controls
from tests.screening.conftest import ordinary_child, syndromic_child

AS_OF = date(2024, 3, 1)


def _population(maps: CodeMaps, n: int, seed: int = 5) -> list[ChildRecord]:
    records = [record for record, _ in simulate_controls(maps, n, seed)]
    records += [syndromic_child(f"syndromic-{i}") for i in range(3)]
    old = ordinary_child("too-old")
    old.birth_date = date(2010, 1, 1)
    tested = ordinary_child("in-genetics-care")
    tested.facts.append(CodedFact("procedure", "snomed", "405824009", date(2022, 1, 1)))  # genetic test
    partial = syndromic_child("incomplete")
    partial.dropped.append(DroppedEntry("entry[3] Condition/c-3", "invalid Condition: onsetDateTime: bad date"))
    return records + [old, tested, partial]


def _write_bundles(records: list[ChildRecord], path: Path) -> Path:
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps(record_to_bundle(record)) + "\n")
    return path


def _write_bulk(records: list[ChildRecord], folder: Path) -> Path:
    """A Bulk Data $export folder: one NDJSON file per resource type, Observations split in two files."""
    folder.mkdir()
    by_type: dict[str, list[str]] = {}
    for record in records:
        for entry in record_to_bundle(record)["entry"]:
            resource = entry["resource"]
            by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for rtype, lines in by_type.items():
        if rtype == "Observation":
            half = len(lines) // 2
            (folder / "Observation.000.ndjson").write_text("\n".join(lines[half:]) + "\n")
            (folder / "Observation.001.ndjson").write_text("\n".join(lines[:half]) + "\n")
        else:
            (folder / f"{rtype}.ndjson").write_text("\n".join(reversed(lines)) + "\n")
    return folder


def _options(**changes: Any) -> RunOptions:
    return replace(
        RunOptions(as_of=AS_OF.isoformat(), budget=0.01, max_age_years=7.0, model_path=None, write_all=True), **changes
    )


def _by_patient(path: Path) -> dict[str, tuple[bool, float | None, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["patient_id"]: (r["flagged"], r["risk"], r["status"]) for r in rows}


def test_batches_screen_as_child_by_child(screener: Screener, maps: CodeMaps) -> None:
    records = _population(maps, 400)
    one_by_one = [screener.screen(r, AS_OF) for r in records]
    batched = screen_batch(screener, records, AS_OF)
    assert [r.status for r in batched] == [r.status for r in one_by_one]
    assert {r.status for r in batched} >= {"screened", "out_of_age", "in_genetics_care", "incomplete"}
    assert [r.flagged for r in batched] == [r.flagged for r in one_by_one] and sum(r.flagged for r in batched) >= 3
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.risk == b.risk  # the batch product adds the same numbers in the same order
        assert (a.candidates, a.drivers, a.organ_systems, a.dropped) == (b.candidates, b.drivers, b.organ_systems, b.dropped)


def test_bulk_export_folder_bundles_and_partitions_agree(tmp_path: Path, screener: Screener, maps: CodeMaps) -> None:
    records = _population(maps, 300)
    bundles = _write_bundles(records, tmp_path / "children.ndjson")
    bulk = _write_bulk(records, tmp_path / "export")
    with (bulk / "Condition.ndjson").open("a") as out:
        out.write("{broken\n")
        out.write(
            json.dumps(
                {
                    "resourceType": "Condition",
                    "id": "lost",
                    "subject": {"reference": "Patient/nobody"},
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q02"}]},
                }
            )
            + "\n"
        )
    results = {}
    for name, source, partition_bytes in (
        ("one", bundles, 1 << 30),
        ("ranges", bundles, 1 << 16),
        ("bulk", bulk, 1 << 16),
    ):
        out, errors = tmp_path / f"{name}.ndjson", tmp_path / f"{name}.errors.ndjson"
        summary = run_population(
            source, out, _options(partition_bytes=partition_bytes), errors_out=errors, quiet=True, screener=screener
        )
        results[name] = _by_patient(out)
        assert sum(summary.counts[k] for k in ("screened", "incomplete", "not_screened")) == len(records)
        if name == "bulk":
            assert summary.partitions > 4
            reasons = [json.loads(line)["reason"] for line in errors.read_text().splitlines()]
            assert len(reasons) == 2 and any("not JSON" in r for r in reasons)
            assert any("reference a Patient not in the input" in r and "nobody" not in r for r in reasons)
        elif name == "ranges":
            assert summary.partitions > 4 and errors.read_text() == ""
        assert not (tmp_path / f"{name}.ndjson.work").exists()  # removed after the merge
    assert results["one"] == results["ranges"] == results["bulk"]
    assert sum(flagged for flagged, _, _ in results["one"].values()) >= 3


def test_a_child_in_two_records_is_screened_once_on_both_whichever_partitions_hold_them(
    tmp_path: Path, screener: Screener, maps: CodeMaps
) -> None:
    """Two Bundles of one child (an extract appended to) had been screened as two children, each on half of the
    record: here each half alone stays under the threshold, and the child was not flagged. The child is screened
    once on both records (the run's counts and line as if the extract held one record), named in the errors file
    and counted, in one partition or across partitions, and when the run resumes from kept partitions."""
    records = _population(maps, 200)
    whole = syndromic_child("twice")
    whole.facts, whole.measurements = whole.facts[:4], []  # a cardiac defect, a cleft palate, hypotonia, faltering growth
    early, late = replace(whole, facts=whole.facts[:2]), replace(whole, facts=whole.facts[2:])
    assert [r.flagged for r in screen_batch(screener, [early, late, whole], AS_OF)] == [False, False, True]
    source = _write_bundles([early, *records, late], tmp_path / "children.ndjson")
    one_record = tmp_path / "one-record.ndjson"
    expected = run_population(_write_bundles([whole, *records], tmp_path / "one.ndjson"), one_record, _options(),
                              quiet=True, screener=screener)
    assert expected.counts["repeated_patients"] == 0
    expected_line = next(json.loads(line) for line in one_record.read_text().splitlines() if '"twice"' in line)
    for partition_bytes, write_all in ((1 << 30, True), (1 << 16, True), (1 << 16, False)):
        out, errors, work = tmp_path / "flags.ndjson", tmp_path / "errors.ndjson", tmp_path / "work"
        options = _options(partition_bytes=partition_bytes, write_all=write_all)
        for attempt in ("first", "resumed"):
            summary = run_population(source, out, options, errors_out=errors, work=work, keep_work=True, quiet=True,
                                     screener=screener)
            assert (summary.partitions > 4) == (partition_bytes == 1 << 16)
            assert {**summary.counts, "repeated_patients": 0} == expected.counts, (partition_bytes, write_all, attempt)
            assert summary.counts["repeated_patients"] == 1
            named = [json.loads(line) for line in errors.read_text().splitlines()]
            assert [n["record"] for n in named] == ["patient twice"] and "is in 2 records" in named[0]["reason"]
            assert "screened once, on the records together" in named[0]["reason"]
            (line,) = [json.loads(line) for line in out.read_text().splitlines() if '"twice"' in line]
            assert line["flagged"] and {k: line[k] for k in ("risk", "status", "reason", "dropped", "explanation")} == {
                k: expected_line[k] for k in ("risk", "status", "reason", "dropped", "explanation")}
            assert out.read_text().count("\n") == (len(records) + 1 if write_all else summary.counts["flagged"])
            (work / "results" / "part-00000.json").unlink()  # as if killed: the others are resumed
        shutil.rmtree(work)
    single = run_population(_write_bundles(records, tmp_path / "once.ndjson"), out, _options(), quiet=True, screener=screener)
    assert single.counts["repeated_patients"] == 0


def test_records_of_one_child_merge_into_one_that_lists_what_differs() -> None:
    first, second = syndromic_child("c"), ordinary_child("c")
    second.name, second.dropped = "Jo", [DroppedEntry("entry[2] Condition/x", "invalid Condition: bad date")]
    merged = merged_record([first, second])
    assert (merged.birth_date, merged.sex, merged.name) == (first.birth_date, first.sex, "Jo")
    assert merged.facts == first.facts + second.facts and merged.measurements == first.measurements + second.measurements
    assert [d.reason for d in merged.dropped] == [
        "invalid Condition: bad date",
        "Patient c again, with birth date 2020-05-01 and sex M where the first read says 2021-03-01 and F: the first is read",
    ]
    assert first.dropped == [] and len(first.facts) == len(syndromic_child().facts)  # the records are left as they were
    second.deceased, first.inactive = date(2024, 1, 1), "merged into p2"
    assert merged_record([first, second]).deceased == date(2024, 1, 1) and merged_record([first, second]).inactive == ""


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, screener: Screener, maps: CodeMaps) -> None:
    source = _write_bundles(_population(maps, 200), tmp_path / "children.ndjson")
    out, work = tmp_path / "flags.ndjson", tmp_path / "work"
    first = run_population(
        source, out, _options(partition_bytes=1 << 16), work=work, quiet=True, keep_work=True, screener=screener
    )
    expected = out.read_bytes()
    # As if killed before the last two partitions were kept: their results are gone.
    for index in (first.partitions - 1, first.partitions - 2):
        (work / "results" / f"part-{index:05d}.json").unlink()
    out.unlink()
    again = run_population(source, out, _options(partition_bytes=1 << 16), work=work, quiet=True, screener=screener)
    assert again.resumed == first.partitions - 2 and again.counts == first.counts
    assert _by_patient(out) == _by_patient(tmp_path / "flags.ndjson") and out.read_bytes().count(
        b"\n"
    ) == expected.count(b"\n")
    # Other options are another run: nothing is taken from a work folder of different options.
    run_population(
        source, out, _options(partition_bytes=1 << 16), work=work, quiet=True, keep_work=True, screener=screener
    )
    other = run_population(
        source, out, _options(partition_bytes=1 << 16, as_of="2024-04-01"), work=work, quiet=True, screener=screener
    )
    assert other.resumed == 0
    # A folder that is not a work folder is never cleared.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        run_population(source, out, _options(), work=tmp_path / "mine", quiet=True, screener=screener)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.integration
def test_a_two_worker_dask_cluster_gives_the_single_process_results(
    tmp_path: Path, screener: Screener, maps: CodeMaps
) -> None:
    import dask
    from distributed import Client

    from screening.population_dask import local_cluster

    records = _population(maps, 5000, seed=17)
    source = _write_bundles(records, tmp_path / "children.ndjson")
    options = _options(partition_bytes=1 << 20)
    single = run_population(source, tmp_path / "single.ndjson", options, quiet=True, screener=screener)
    with (
        local_cluster(2) as cluster,  # as screen-emr --workers 2 starts it
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        # The workers run without Dask's stack-sampling profiler and with glibc's adaptive malloc thresholds
        # (each had cost about a tenth of the screening).
        assert set(client.run(lambda: dask.config.get("distributed.worker.profile.enabled")).values()) == {False}
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
        work = tmp_path / "work"
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["summary"] = run_population(
                source, tmp_path / "dask.ndjson", options, work=work, quiet=True, scheduler=cluster.scheduler_address
            )

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 600
        while not list((work / "results").glob("*.json")) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
        done_when_killed = len(list((work / "results").glob("*.json")))
        os.kill(pids[0], signal.SIGKILL)  # a worker dies with partitions in flight: they are run again
        thread.join(timeout=900)
        assert not thread.is_alive()
    summary = outcome["summary"]
    assert 0 < done_when_killed < summary.partitions
    assert summary.counts == single.counts and summary.partitions == single.partitions > 10
    dask_results, single_results = _by_patient(tmp_path / "dask.ndjson"), _by_patient(tmp_path / "single.ndjson")
    assert dask_results == single_results and len(single_results) == len(records)
    assert sum(flagged for flagged, _, _ in single_results.values()) >= 3


def test_a_folder_of_patient_bundles_as_synthea_writes_it(tmp_path: Path, screener: Screener, maps: CodeMaps) -> None:
    """Synthea writes one transaction Bundle per patient (references by urn:uuid of the Patient's fullUrl) and
    Bundles of practitioners and hospitals beside them: screened as the same children in an NDJSON file."""
    records = _population(maps, 40)
    folder = tmp_path / "fhir"
    folder.mkdir()
    for number, record in enumerate(records):
        bundle = record_to_bundle(record)
        bundle["type"] = "transaction"
        uuid = f"00000000-0000-4000-8000-{number:012d}"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                resource["id"], entry["fullUrl"] = uuid, f"urn:uuid:{uuid}"
            else:
                resource["subject"] = {"reference": f"urn:uuid:{uuid}"}
        (folder / f"child_{number:03d}.json").write_text(json.dumps(bundle))
    (folder / "practitionerInformation1.json").write_text(json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Practitioner", "id": "p1"}}]}))
    expected = _by_patient(_ran(_write_bundles(records, tmp_path / "children.ndjson"), tmp_path / "a", screener, 1 << 30))
    for stem, partition_bytes, partitions in (("b", 1 << 30, 1), ("c", 1 << 14, len(records) // 2)):
        got = _by_patient(_ran(folder, tmp_path / stem, screener, partition_bytes, partitions))
        assert list(got.values()) == list(expected.values()) and len(got) == len(records)


def _ran(source: Path, stem: Path, screener: Screener, partition_bytes: int, partitions: int | None = None) -> Path:
    out = stem.with_suffix(".ndjson")
    summary = run_population(source, out, _options(partition_bytes=partition_bytes),
                             errors_out=stem.with_suffix(".errors.ndjson"), quiet=True, screener=screener)
    # runs of files of about the partition size (the bundles are 8-13 KB: two or so in 16 KB)
    assert partitions is None or abs(summary.partitions - partitions) <= partitions // 4, summary.partitions
    assert stem.with_suffix(".errors.ndjson").read_text() == ""
    return out
