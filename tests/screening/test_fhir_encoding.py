"""A FHIR extract that is not UTF-8 (a Windows-1252 EMR export, UTF-16 from Windows PowerShell 5.1's `>`) is
refused whole, naming the file, the byte and what to do, by every reader: the Patient of a child named Müller had
been "not JSON", the child unscreened, its resources "a Patient not in the input", and screen-emr had exited 0
(charset review 4, defect 6)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datasets.emr_records import ChildRecord, RecordError
from datasets.errors import ExtractError
from datasets.fhir_bulk import bulk_files, partition_by_patient, read_partition_file
from datasets.fhir_emr import read_fhir, record_to_bundle
from datasets.fhir_fast import read_fhir_fast, records_from_ndjson_lines
from medscreen.cli import main
from tests.screening.conftest import ordinary_child, syndromic_child

Reader = Callable[[Path], Iterator[ChildRecord | RecordError]]
READERS: dict[str, Reader] = {"fast": read_fhir_fast, "full": read_fhir}


def _bundle(pid: str, family: str) -> dict[str, Any]:
    bundle = record_to_bundle(syndromic_child(pid) if pid.endswith("a") else ordinary_child(pid))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["name"] = [{"family": family, "given": ["Zoë"]}]
    return bundle


def _loose_lines(encoding: str) -> bytes:
    resources = [e["resource"] for pid, f in (("child-a", "Müller"), ("child-b", "Smith")) for e in _bundle(pid, f)["entry"]]
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in resources) + "\n").encode(encoding)


@pytest.mark.parametrize("reader", READERS)
def test_a_windows_1252_bundle_file_is_refused_naming_the_byte(tmp_path: Path, reader: str) -> None:
    data = json.dumps(_bundle("child-a", "Müller"), ensure_ascii=False).encode("cp1252")
    path = tmp_path / "export.json"
    path.write_bytes(data)
    offset = data.index(b"\xfc")
    with pytest.raises(ExtractError) as refused:
        list(READERS[reader](path))
    message = str(refused.value)
    assert f"export.json is not UTF-8 text (byte 0xfc at byte offset {offset} cannot be read)" in message
    assert "export it as UTF-8" in message and "iconv -f WINDOWS-1252 -t UTF-8" in message


@pytest.mark.parametrize("reader", READERS)
def test_a_windows_1252_ndjson_file_is_refused_naming_its_line_and_byte(tmp_path: Path, reader: str) -> None:
    data = b"\xef\xbb\xbf" + _loose_lines("cp1252")  # a byte-order mark before: offsets count it
    path = tmp_path / "export.ndjson"
    path.write_bytes(data)
    offset = data.index(b"\xfc")
    line = data[:offset].count(b"\n") + 1
    with pytest.raises(ExtractError, match=rf"export.ndjson is not UTF-8 text \(byte 0xfc at line {line}, byte offset {offset} "):
        list(READERS[reader](path))


@pytest.mark.parametrize("reader", READERS)
def test_a_utf16_file_is_refused_as_utf16(tmp_path: Path, reader: str) -> None:
    for name, data in (
        ("export.json", json.dumps(_bundle("child-a", "Müller"), ensure_ascii=False).encode("utf-16")),
        ("export.ndjson", _loose_lines("utf-16")),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ExtractError, match=rf"{name} is UTF-16 text, not UTF-8 .*iconv -f UTF-16 -t UTF-8"):
            list(READERS[reader](tmp_path / name))


def test_utf8_with_a_byte_order_mark_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + _loose_lines("utf-8"))
    for reader in READERS.values():
        names = sorted(r.name for r in reader(path) if isinstance(r, ChildRecord))
        assert names == ["Zoë Müller", "Zoë Smith"]


def test_a_bulk_export_is_refused_while_it_is_split(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(_loose_lines("utf-8"))
    data = _loose_lines("cp1252")
    (export / "Resources.ndjson").write_bytes(data)
    offset = data.index(b"\xfc")
    with pytest.raises(ExtractError, match=rf"Resources.ndjson is not UTF-8 text \(byte 0xfc at line 1, byte offset {offset} "):
        partition_by_patient(bulk_files(export), tmp_path / "split", 2)
    (export / "Resources.ndjson").unlink()
    parts = partition_by_patient(bulk_files(export), tmp_path / "split", 1)
    assert sorted(r.patient_id for p in parts for r in read_partition_file(p, "export") if isinstance(r, ChildRecord)) == [
        "child-a", "child-b",
    ]


def test_screen_emr_stops_and_says_why_instead_of_leaving_a_child_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = tmp_path / "export.ndjson"
    extract.write_bytes(_loose_lines("cp1252"))
    out = tmp_path / "flags.ndjson"
    assert main(["screen-emr", str(extract), "--out", str(out), "--as-of", "2024-03-01", "--quiet", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "cannot screen" in err and "export.ndjson is not UTF-8 text (byte 0xfc at line 1, byte offset" in err
    assert "not in the input" not in err
    errors = out.with_name("flags.errors.ndjson")
    assert not errors.exists() or "not in the input" not in errors.read_text()


def test_a_bundle_per_line_extract_is_refused_naming_the_line(tmp_path: Path) -> None:
    # How screen-emr reads a large file of Bundle lines: in byte ranges, where only the line number is known.
    good = json.dumps(_bundle("b", "Smith"), ensure_ascii=False).encode()
    bad = json.dumps(_bundle("a", "Müller"), ensure_ascii=False).encode("cp1252")
    at = next(i for i, b in enumerate(bad) if b >= 0x80)  # the first byte beyond ASCII: Windows-1252, not UTF-8
    lines = [good, bad]
    with pytest.raises(ExtractError, match=rf"extract is not UTF-8 text \(byte 0x{bad[at]:02x} at line 8, byte {at} of the line "):
        list(records_from_ndjson_lines(enumerate(lines, start=7), "extract"))
