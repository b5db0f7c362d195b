"""FHIR Bulk Data ``$export`` output: loose resources in NDJSON files, split by patient on disk.

An ``$export`` folder holds one or more NDJSON files per resource type (``Patient.ndjson``,
``Condition.ndjson``, ``Observation.002.ndjson``, ...; the file names are not trusted, each line names
its ``resourceType``). A child's resources are spread over every file, so they must be brought
together: instead of holding the extract in memory, one streaming pass appends each line to one of N
partition files chosen by a stable hash of its patient (the Patient's id, or the last part of the
``subject``/``patient`` reference), each line prefixed with where it came from. A partition then holds
every resource of its children and is small enough to group in memory (:func:`read_partition_file`).
Lines that name no patient (broken JSON, no reference) go to partition 0, whose reader reports them.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from msgspec import UNSET

from datasets.emr_records import ChildRecord, RecordError
from datasets.fhir_bundle_decoder import BundleLineReader, patient_key
from datasets.fhir_fast import RESOURCE_TYPES, records_from_bundle_fast, records_from_resources_fast, utf8_lines
from datasets.fhir_primitives import reference_key

__all__ = ["bulk_files", "partition_by_patient", "read_partition_file", "partition_of"]

# The prefix of each line of a partition file: "<file>:<line>\t<the resource as exported>". JSON text
# never holds a raw tab inside a string, and file names with a tab are refused.
_SEPARATOR = b"\t"


def bulk_files(folder: Path) -> list[Path]:
    """The NDJSON files of an ``$export`` folder, in name order (``Patient`` files need not be first)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".ndjson"))


def partition_of(patient: str, partitions: int) -> int:
    """A stable partition for a patient (crc32: the same on every machine and Python run)."""
    return zlib.crc32(patient.encode("utf-8")) % partitions


def _patient_key(line: bytes) -> str | None:
    key = patient_key(line)  # typed, reading only the references (a third of a full parse)
    return _patient_key_by_parsing(line) if key is UNSET else key  # type: ignore[return-value]


def _patient_key_by_parsing(line: bytes) -> str | None:
    """The patient of a loose resource from the whole line parsed (where the typed decoder cannot tell)."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    if raw.get("resourceType") == "Patient":
        rid = raw.get("id")
        return rid if isinstance(rid, str) else None
    for element in ("subject", "patient"):
        value = raw.get(element)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            return reference_key(str(value["reference"]))
    return None


def _is_medication(line: bytes) -> bool:
    if b'"Medication"' not in line:
        return False
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(raw, dict) and raw.get("resourceType") == "Medication"


def partition_by_patient(
    files: list[Path], folder: Path, partitions: int, progress: Callable[[int], Any] | None = None
) -> list[Path]:
    """Split the lines of ``files`` into ``partitions`` files under ``folder``; returns their paths.

    ``progress`` is called with the bytes read so far of each file. The files are written whole
    before this returns (the caller records that the split is done; an interrupted split is redone).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{i:05d}.ndjson" for i in range(partitions)]
    handles = [p.open("wb", buffering=1 << 20) for p in paths]
    try:
        for path in files:
            if "\t" in path.name or "\n" in path.name:
                raise ValueError(f"refusing an export file name with a tab or newline: {path.name!r}")
            name = path.name.encode("utf-8")
            read = 0
            with path.open("rb") as handle:
                # Checked here, where the file and the byte are known: a line that is not UTF-8 had become a
                # "not JSON" error, and a child whose Patient it was had gone unscreened (charset review 4).
                for number, line in utf8_lines(handle, path.name):
                    read += len(line)
                    if progress is not None and number % 4096 == 0:
                        progress(read)
                        read = 0
                    if not line.strip():
                        continue
                    if not line.endswith(b"\n"):
                        line += b"\n"
                    key = _patient_key(line)
                    prefixed = name + b":" + str(number).encode() + _SEPARATOR + line
                    if key is None and _is_medication(line):
                        for h in handles:  # no patient's own: every partition may hold a request that names it
                            h.write(prefixed)
                        continue
                    handles[0 if key is None else partition_of(key, partitions)].write(prefixed)
            if progress is not None:
                progress(read)
    finally:
        for h in handles:
            h.flush()
            os.fsync(h.fileno())
            h.close()
    return paths


def read_partition_file(path: Path, source: str, full_validation: bool = False) -> Iterator[ChildRecord | RecordError]:
    """The records of one partition: its resources grouped by patient in memory (``full_validation``:
    every resource through the ``fhir.resources`` models, :mod:`datasets.fhir_emr`)."""
    with path.open("rb") as handle:
        lines = [line.partition(_SEPARATOR) for line in handle]
    if not full_validation:
        # Nothing to report in the whole partition (the common case): the typed decoder reads it.
        records = BundleLineReader(source).resource_records([text for _, _, text in lines])
        if records is not None:
            yield from records
            return
    from_bundle = records_from_bundle_fast
    if full_validation:
        from datasets.fhir_emr import records_from_bundle

        from_bundle = records_from_bundle  # type: ignore[assignment]
    resources: list[tuple[bytes, Any]] = []
    errors: list[RecordError] = []
    bundles: list[tuple[bytes, Any]] = []
    for where, _, text in lines:
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            errors.append(RecordError(source, _where(where), f"not JSON: {exc.msg}"))
            continue
        if isinstance(raw, dict) and raw.get("resourceType") == "Bundle":
            bundles.append((where, raw))  # a child's Bundle among the loose resources (it names no patient: here)
        elif isinstance(raw, dict) and raw.get("resourceType") in (*RESOURCE_TYPES, "Medication"):
            resources.append((where, raw))  # a Medication names the drug of a request that refers to it
    yield from errors
    for where, bundle in bundles:
        yield from from_bundle(bundle, source, where=f"{_where(where)} ")
    if full_validation:
        from datasets.fhir_emr import records_from_resources

        yield from records_from_resources([(_where(where), raw) for where, raw in resources], source)
    else:
        yield from records_from_resources_fast(resources, source, _where)


def _where(prefix: bytes) -> str:
    """The ``file:line`` a partition line came from (decoded only when a resource is reported)."""
    return prefix.decode("utf-8", "replace")
