"""Split an EMR extract into partitions of whole children, each readable on its own (by another process
or machine), so that a population run holds one partition in memory at a time and can spread them.

* an NDJSON file of Bundles (one child per line): byte ranges at line boundaries, nothing copied;
* an NDJSON file of loose resources, or a FHIR Bulk Data ``$export`` folder: split by patient on disk
  (:mod:`datasets.fhir_bulk`);
* one Bundle ``.json`` file, or a CSV extract folder: a single partition (the CSV reader streams a
  sorted extract with flat memory);
* a folder of Bundle ``.json`` files (one per patient, as Synthea writes ``output/fhir``): runs of files of
  about the partition size (a partition per file cost 1.6 ms each, 8x the screening of 2,000 small ones).

A folder may hold several of these at once: each ``.ndjson`` file is read by what its first resource is (a
Bundle line, or a loose resource: the files of loose resources are split by patient together), and its
``.json`` files as Bundle files beside them. Every file of the folder is read: a folder of NDJSON files of
Bundles had been taken for a Bulk Data export, whose reader skips Bundle lines, and its children were lost
without a word.

A file compressed with gzip (``Condition.ndjson.gz``, ``export.ndjson.gz``, ``bundle.json.gz``, as exports are
stored to save space) is decompressed into the run's work folder first, streaming, and read as the file it holds.
It had been skipped in a folder without a word (a Bulk Data folder with its ``Condition`` file compressed
screened every child without a diagnosis) and refused alone as "not UTF-8 text". A file in another compression
(``.bz2``, ``.xz``, ``.zst``, ``.zip``) stops the run with its name and what to do.
"""

from __future__ import annotations

import gzip
import math
import mmap
import re
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

from datasets.emr_csv import CSV_FILES, read_csv_extract
from datasets.emr_records import ChildRecord, RecordError
from datasets.errors import ExtractError
from datasets.fhir_bulk import bulk_files, partition_by_patient, read_partition_file
from datasets.fhir_fast import read_fhir_fast, records_from_ndjson_lines
from datasets.fhir_primitives import UTF8_BOM

__all__ = [
    "Partition",
    "plan_partitions",
    "read_partition",
    "input_files",
    "bundle_files",
    "compressed_files",
    "DEFAULT_PARTITION_BYTES",
]

PartitionKind = Literal["bundle_file", "bundle_files", "bundle_lines", "resources", "csv"]
# About 2,000 simulated children (8 KB of FHIR each): seconds of work, a few MB of memory.
DEFAULT_PARTITION_BYTES = 16 << 20
_MAX_SPLIT_PARTITIONS = 2048  # open files while splitting by patient

Progress = Callable[[int], Any]


@dataclass(frozen=True)
class Partition:
    """One unit of work: where its children are and how to read them (plain data, sent to workers)."""

    index: int
    kind: PartitionKind
    path: str
    source: str
    start: int = 0  # bundle_lines: byte range [start, end) and the number of its first line;
    end: int = 0  # bundle_files: the folder's files [start, end) in name order
    first_line: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundle_files(folder: Path) -> list[Path]:
    """The Bundle ``.json`` files of a folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".json"))


# An extract file in a compression: gzip is read (decompressed first), any other is refused by name.
_GZIP_EXTRACT = re.compile(r".*\.(nd)?json\.gz", re.IGNORECASE)
_OTHER_COMPRESSION = re.compile(r".*\.((nd)?json\.(bz2|xz|zst|zip|z|lz4)|zip|7z|tar|tgz|tar\.gz)", re.IGNORECASE)


def compressed_files(folder: Path) -> list[Path]:
    """The gzip-compressed NDJSON and Bundle files of a folder (``*.ndjson.gz``, ``*.json.gz``), in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _GZIP_EXTRACT.fullmatch(p.name))


def _refuse_other_compression(files: list[Path]) -> None:
    named = [p.name for p in files if _OTHER_COMPRESSION.fullmatch(p.name)]
    if named:
        shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        raise ExtractError(
            f"{shown}: compressed in a form not read here (gzip .gz is read): nothing was screened; decompress "
            "the extract (unzip, bunzip2, unxz, zstd -d) and run again"
        )


def _decompress(packed: Path, folder: Path) -> Path:
    """``packed`` (gzip) decompressed, streaming, into ``folder`` under its name without ``.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / packed.name[: -len(".gz")]
    try:
        with gzip.open(packed, "rb") as source, plain.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ExtractError(
            f"{packed.name} cannot be decompressed ({exc}): nothing was screened; check the file"
        ) from exc
    return plain


def input_files(path: Path) -> list[Path]:
    """The files an extract is made of (to fingerprint it for resuming)."""
    if path.is_dir():
        csv = [path / name for name in CSV_FILES if (path / name).is_file()]
        if (path / CSV_FILES[0]).is_file():
            return csv
        return sorted(bulk_files(path) + bundle_files(path) + compressed_files(path))
    return [path]


def _holds_bundle_lines(path: Path, lines_to_try: int = 100) -> bool:
    """Whether an NDJSON file is one Bundle per line (else loose resources): by the first line that parses
    (past a byte-order mark, and past broken lines, which its reader reports either way). A file none of whose
    first lines parses is read line by line, each line reported."""
    with path.open("rb") as handle:
        tried = 0
        for number, line in enumerate(handle):
            if number == 0:
                line = line.removeprefix(UTF8_BOM)
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                tried += 1
                if tried >= lines_to_try:
                    break
                continue
            return isinstance(obj, dict) and obj.get("resourceType") == "Bundle"
    return True


def _line_ranges(path: Path, target_bytes: int, progress: Progress | None) -> list[tuple[int, int, int]]:
    """``(start, end, first line number)`` of ranges of about ``target_bytes``, cut at line ends: each range
    ends with the first line that makes it ``target_bytes`` long (found by searching the mapped file for
    the next newline, not by reading it line by line)."""
    ranges: list[tuple[int, int, int]] = []
    size = path.stat().st_size
    start, first_line = 0, 1
    if size:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            while start < size:
                newline = mapped.find(b"\n", start + max(target_bytes, 1) - 1)
                end = size if newline < 0 else newline + 1
                ranges.append((start, end, first_line))
                if progress is not None:
                    progress(end - start)
                first_line += mapped[start:end].count(b"\n")
                start = end
    if not ranges:
        ranges.append((0, 0, 1))
        if progress is not None:
            progress(0)
    return ranges


def _file_runs(files: list[Path], target_bytes: int, progress: Progress | None) -> list[tuple[int, int]]:
    """``(start, end)`` runs of consecutive files, each ending with the file that makes it ``target_bytes`` long."""
    runs, start, size = [], 0, 0
    for index, file in enumerate(files):
        size += file.stat().st_size
        if size >= target_bytes or index == len(files) - 1:
            runs.append((start, index + 1))
            if progress is not None:
                progress(size)
            start, size = index + 1, 0
    return runs


def plan_partitions(
    path: Path, split_folder: Path, target_bytes: int = DEFAULT_PARTITION_BYTES, progress: Progress | None = None
) -> list[Partition]:
    """The partitions of the extract at ``path``; loose resources are split into ``split_folder``.

    ``progress`` is called with the bytes read since its last call.
    """
    source = path.name
    if path.is_dir() and (path / CSV_FILES[0]).is_file():
        return [Partition(0, "csv", str(path), source)]
    unpacked = split_folder / "decompressed"
    single_bundles: list[Path] = []  # Bundle files decompressed from a .json.gz, outside the folder's runs
    if not path.is_dir():
        _refuse_other_compression([path])
        if _GZIP_EXTRACT.fullmatch(path.name):
            path = _decompress(path, unpacked)
        if path.suffix.lower() != ".ndjson":
            return [Partition(0, "bundle_file", str(path), source)]
        ndjson, bundles = [path], []
    else:
        _refuse_other_compression([p for p in path.iterdir() if p.is_file()])
        ndjson, bundles = bulk_files(path), bundle_files(path)
        for packed in compressed_files(path):
            plain = _decompress(packed, unpacked)
            (ndjson if plain.suffix.lower() == ".ndjson" else single_bundles).append(plain)
        if not ndjson and not bundles and not single_bundles:
            raise FileNotFoundError(f"{path} holds neither {CSV_FILES[0]} nor any .ndjson or .json file")
    specs: list[tuple[PartitionKind, str, str, int, int, int]] = [
        ("bundle_files", str(path), source, start, end, 1) for start, end in _file_runs(bundles, target_bytes, progress)
    ]
    specs += [("bundle_file", str(p), p.name + ".gz", 0, 0, 1) for p in single_bundles]
    loose = []
    for file in ndjson:
        if not _holds_bundle_lines(file):
            loose.append(file)
            continue
        name = (file.name + ".gz" if file.parent == unpacked else file.name) if path.is_dir() else source
        specs += [
            ("bundle_lines", str(file), name, start, end, first)
            for start, end, first in _line_ranges(file, target_bytes, progress)
        ]
    if loose:
        total = sum(f.stat().st_size for f in loose)
        count = min(_MAX_SPLIT_PARTITIONS, max(1, math.ceil(total / target_bytes)))
        specs += [("resources", str(p), source, 0, 0, 1) for p in partition_by_patient(loose, split_folder, count, progress)]
    return [Partition(i, *spec) for i, spec in enumerate(specs)]


def _lines(path: Path, start: int, end: int, first_line: int) -> Iterator[tuple[int, bytes]]:
    """The numbered lines of a byte range (without their newline), read at once: a partition is a few MB."""
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    if start == 0:
        data = data.removeprefix(UTF8_BOM)
    pieces = data.split(b"\n")
    last = pieces.pop()  # what follows the last newline: empty, or a last line without one
    yield from enumerate(pieces, start=first_line)
    if last:
        yield first_line + len(pieces), last


def read_partition(partition: Partition, full_validation: bool = False) -> Iterator[ChildRecord | RecordError]:
    """The records of one partition (``full_validation``: through the ``fhir.resources`` models)."""
    path = Path(partition.path)
    if partition.kind == "csv":
        yield from read_csv_extract(path)
    elif partition.kind == "resources":
        yield from read_partition_file(path, partition.source, full_validation)
    elif partition.kind == "bundle_files":
        for file in bundle_files(path)[partition.start : partition.end]:
            yield from read_partition(replace(partition, kind="bundle_file", path=str(file), source=file.name), full_validation)
    elif partition.kind == "bundle_file":
        if full_validation:
            from datasets.fhir_emr import read_fhir

            yield from read_fhir(path)
        else:
            yield from read_fhir_fast(path)
    else:
        lines = _lines(path, partition.start, partition.end, partition.first_line)
        yield from records_from_ndjson_lines(lines, partition.source, full_validation)
