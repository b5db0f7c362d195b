"""Population runs (``medscreen screen-emr``): an extract split into partitions of whole children,
each screened in batches by a process that loads the knowledge once, results written per partition
and merged in partition order.

The partitions run in this process (the default), on a Dask ``LocalCluster`` of ``workers``
processes, or on a running Dask cluster (``scheduler`` address; its workers need this package and
read access to the extract at the same path). Every way runs the same function on the same
partitions, so the output is the same, byte for byte. A worker that fails or dies has its partition
retried (by Dask, on another worker). Results of finished partitions are kept under the work folder,
so a run that was interrupted goes on where it stopped when started again with the same input and
options; the work folder is removed after the merge. A child in more than one record of the extract is screened
again by the driver, once, on the records together, and its line replaces the partial ones.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from datasets.emr_records import ChildRecord, RecordError
from datasets.extract_partitions import (
    DEFAULT_PARTITION_BYTES,
    Partition,
    input_files,
    plan_partitions,
    read_partition,
)
from datasets.fhir_entry_rules import merged_record
from screening.batch_screen import screen_batch
from screening.findings import RETIRING_STATUSES, age_limit_days
from screening.screener import Screener, ScreeningResult

__all__ = ["RunOptions", "PartitionResult", "RunSummary", "screen_partition", "run_population"]

logger = logging.getLogger(__name__)

BATCH = 1000  # children per sparse product: large enough to amortise, small enough for flat memory


@dataclass(frozen=True)
class RunOptions:
    """Everything a partition's result depends on (kept in the work folder's manifest)."""

    as_of: str  # ISO date
    budget: float
    max_age_years: float
    model_path: str | None
    write_all: bool = False
    full_validation: bool = False
    partition_bytes: int = DEFAULT_PARTITION_BYTES
    threshold: float | None = None  # the site's own (settings.screening_risk_threshold); None: from the budget
    # Record ids whose latest stored result the page lists as not fully read (``results_store.unread_children``):
    # their line is written whatever the result, so that the run stores it and it replaces that listing (a corrected
    # record, screened complete and not flagged, had left it on the page for good).
    listed_unread: tuple[str, ...] = ()

    @cached_property
    def listed_unread_ids(self) -> frozenset[str]:
        return frozenset(self.listed_unread)


@dataclass
class PartitionResult:
    index: int
    flags: bytes  # NDJSON lines of the partition's output
    errors: bytes  # NDJSON lines of its record errors
    counts: dict[str, int]
    model_version: str
    threshold: float
    patients: bytes = b""  # one JSON string per record read: the patient ids, to find a child in two records


# ``aged_out``: not screened for age, yet under the age limit at the record's last entry (an older extract
# screened as of today: its children grew past the limit since).
_COUNTS = ("screened", "incomplete", "flagged", "errors", "not_screened", "aged_out", "deceased", "inactive_record")
# Written whatever the options: an incomplete record (never a silent "no risk"), and a child who has died or whose
# record is no longer in use (stored, the line retires the child's earlier flag from the paediatrician's page).
_ALWAYS_WRITTEN = frozenset({"incomplete", *RETIRING_STATUSES})


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    partitions: int = 0
    resumed: int = 0
    model_version: str = ""
    threshold: float = 1.0
    seconds_splitting: float = 0.0  # reading the extract into partitions
    seconds_loading: float = 0.0  # the knowledge, once per process (in parallel on Dask workers)
    seconds_screening: float = 0.0  # reading and screening the partitions, and merging


def load_screener(options: RunOptions) -> Screener:
    """The screener of a population run, with all it builds or imports on first use built now (the
    batch search's index, the FHIR output's resource models): loaded once per process, so the time
    to screen a partition is screening alone."""
    import screening.fhir_output  # noqa: F401  (fhir.resources' models: a fifth of a second)

    screener = Screener.load(
        options.budget, options.max_age_years, Path(options.model_path) if options.model_path else None, options.threshold
    )
    _ = screener.best_disease_search
    return screener


def _line(result: ScreeningResult, record: ChildRecord, screener: Screener) -> bytes:
    from screening.fhir_output import explanation, flag_json, risk_assessment_json

    line = {
        "patient_id": result.patient_id,
        # What the paediatrician's page lists beside the flag (stored by the driver, see results_store).
        "patient": {
            "name": record.name, "mrn": record.mrn,
            "practitioner": record.practitioner, "organization": record.organization,
        },
        "screened_at": result.screened_at.isoformat(),
        "age_days": result.age_days,
        "reason": result.reason,
        "model_version": result.model_version,
        "threshold": result.threshold,
        "status": result.status,
        "risk": result.risk,
        "flagged": result.flagged,
        "dropped": [{"entry": d.entry, "reason": d.reason} for d in result.dropped],
        "explanation": explanation(result, screener.ontology),
        "RiskAssessment": risk_assessment_json(result, screener.ontology),
        "Flag": flag_json(result),
    }
    return orjson.dumps(line) + b"\n"


def _batches(items: Iterator[ChildRecord | RecordError], size: int) -> Iterator[list[ChildRecord | RecordError]]:
    batch: list[ChildRecord | RecordError] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# Collections of the youngest generation while a partition is read, instead of Python's 700 allocations:
# reading makes millions of small objects that live until their batch is screened, and at the default the
# collector ran thousands of times per partition for nothing (no cycles are made), ~15% of the time on
# 6,000 children (benchmarks/screening.py).
_YOUNG_COLLECTION_EVERY = 50_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, 20, 50)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _under_age_at_last_entry(record: ChildRecord, max_age_days: int) -> bool:
    dates = [f.date for f in record.facts if f.date is not None] + [m.date for m in record.measurements]
    return bool(dates) and 0 <= (max(dates) - record.birth_date).days < age_limit_days(record.birth_date, max_age_days)


def _tally(
    counts: dict[str, int], record: ChildRecord, result: ScreeningResult, screener: Screener, options: RunOptions, sign: int = 1
) -> bool:
    """Count a child's result (``sign`` -1 takes it back out); whether its line is written."""
    counts[result.status if result.status in ("screened", "incomplete") else "not_screened"] += sign
    counts["flagged"] += sign * result.flagged
    counts["aged_out"] += sign * (result.status == "out_of_age" and _under_age_at_last_entry(record, screener.max_age_days))
    if result.status in RETIRING_STATUSES:
        counts[result.status] += sign
    return (result.flagged or options.write_all or result.status in _ALWAYS_WRITTEN
            or record.patient_id in options.listed_unread_ids)


def _screen_merged(
    screener: Screener, partitions: list[Partition], repeated: set[str], options: RunOptions, holding: set[int]
) -> tuple[bytes, dict[str, int]]:
    """The children in more than one record, each screened once on its records merged
    (:func:`datasets.fhir_entry_rules.merged_record`): their lines, and the change to the run's counts (the merged
    results in, each record's own result out). ``holding``: the partitions that hold their records, read again."""
    as_of = date.fromisoformat(options.as_of)
    parts: dict[str, list[ChildRecord]] = {}
    for p in partitions:
        if p.index in holding:
            for item in read_partition(p, options.full_validation):
                if isinstance(item, ChildRecord) and item.patient_id in repeated:
                    parts.setdefault(item.patient_id, []).append(item)
    delta = dict.fromkeys(_COUNTS, 0)
    alone = [record for pid in sorted(parts) for record in parts[pid]]
    for record, result in zip(alone, screen_batch(screener, alone, as_of), strict=True):
        _tally(delta, record, result, screener, options, sign=-1)
    merged = [merged_record(parts[pid]) for pid in sorted(parts)]
    lines = bytearray()
    for record, result in zip(merged, screen_batch(screener, merged, as_of), strict=True):
        if _tally(delta, record, result, screener, options):
            lines += _line(result, record, screener)
    return bytes(lines), delta


def screen_partition(screener: Screener, partition: Partition, options: RunOptions) -> PartitionResult:
    """Read and screen one partition, in batches of :data:`BATCH` children."""
    with _fewer_collections():
        return _screen_partition(screener, partition, options)


def _screen_partition(screener: Screener, partition: Partition, options: RunOptions) -> PartitionResult:
    as_of = date.fromisoformat(options.as_of)
    counts = dict.fromkeys(_COUNTS, 0)
    flags, errors, patients = bytearray(), bytearray(), bytearray()
    for batch in _batches(read_partition(partition, options.full_validation), BATCH):
        records = [item for item in batch if isinstance(item, ChildRecord)]
        for record in records:
            patients += orjson.dumps(record.patient_id) + b"\n"
        for item in batch:
            if isinstance(item, RecordError):
                counts["errors"] += 1
                errors += orjson.dumps({"source": item.source, "record": item.record, "reason": item.reason}) + b"\n"
        for record, result in zip(records, screen_batch(screener, records, as_of), strict=True):
            if _tally(counts, record, result, screener, options):
                flags += _line(result, record, screener)
    return PartitionResult(
        partition.index, bytes(flags), bytes(errors), counts, screener.model.version, screener.threshold, bytes(patients)
    )


# --- the work folder: manifest, per-partition results, merge -------------------------------------


def _fingerprint(input_path: Path, options: RunOptions) -> str:
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in input_files(input_path)]
    model = Path(options.model_path) if options.model_path else None
    if model is None:
        from screening.risk_model import SHIPPED_SCREENER

        model = SHIPPED_SCREENER
    model_id = (str(model), model.stat().st_size, model.stat().st_mtime_ns) if model.exists() else (str(model),)
    blob = orjson.dumps({"files": files, "options": asdict(options), "model": model_id})
    return hashlib.sha256(blob).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class _WorkFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.results = root / "results"
        self.manifest = root / "manifest.json"

    def partitions_for(self, fingerprint: str) -> list[Partition] | None:
        """The partitions of an earlier run of the same input and options, if its split finished."""
        if not self.manifest.is_file():
            return None
        try:
            manifest = orjson.loads(self.manifest.read_bytes())
        except orjson.JSONDecodeError:
            return None
        if manifest.get("fingerprint") != fingerprint:
            logger.warning("work folder %s is for another input or other options: starting over", self.root)
            return None
        return [Partition(**p) for p in manifest["partitions"]]

    def start(self, fingerprint: str, plan: Callable[[Path], list[Partition]]) -> list[Partition]:
        if self.root.exists():
            ours = {"manifest.json", "results", "split"}
            if not set(os.listdir(self.root)) <= ours:
                # Never clear a folder this run did not make (a mistyped --work pointing at /tmp or home).
                raise FileExistsError(f"{self.root} is not a screen-emr work folder; choose an empty or new one")
            shutil.rmtree(self.root)
        self.results.mkdir(parents=True)
        partitions = plan(self.root / "split")
        manifest = {"fingerprint": fingerprint, "partitions": [p.as_dict() for p in partitions]}
        _write_atomic(self.manifest, orjson.dumps(manifest))
        return partitions

    def _paths(self, index: int) -> tuple[Path, Path, Path]:
        stem = self.results / f"part-{index:05d}"
        return stem.with_suffix(".flags.ndjson"), stem.with_suffix(".errors.ndjson"), stem.with_suffix(".json")

    def _patients(self, index: int) -> Path:
        return self.results / f"part-{index:05d}.patients"

    def done(self, index: int) -> dict[str, Any] | None:
        marker = self._paths(index)[2]
        return orjson.loads(marker.read_bytes()) if marker.is_file() else None

    def keep(self, result: PartitionResult) -> dict[str, Any]:
        flags, errors, marker = self._paths(result.index)
        _write_atomic(flags, result.flags)
        _write_atomic(errors, result.errors)
        _write_atomic(self._patients(result.index), result.patients)
        info = {"counts": result.counts, "model_version": result.model_version, "threshold": result.threshold}
        _write_atomic(marker, orjson.dumps(info))  # last: its presence says the partition is done
        return info

    def repeated_patients(self, partitions: list[Partition]) -> tuple[dict[str, int], set[int]]:
        """Patient ids read in more than one record of the extract (two Bundles of one child), with how many, and
        the partitions that hold their records.

        A first pass keeps a 64-bit hash per record (8 bytes a child: 80 MB for ten million), a second counts
        the ids whose hash repeats, so a collision costs a look, never a false report."""
        import numpy as np

        def lines(index: int) -> Iterator[bytes]:
            path = self._patients(index)
            if path.is_file():  # a partition finished by an earlier version of this run has none
                with path.open("rb") as handle:
                    yield from handle

        hashes = np.fromiter((hash(line) for p in partitions for line in lines(p.index)), dtype=np.int64)
        values, counts = np.unique(hashes, return_counts=True)
        suspects = set(values[counts > 1].tolist())
        if not suspects:
            return {}, set()
        seen: dict[bytes, list[int]] = {}
        for p in partitions:
            for line in lines(p.index):
                if hash(line) in suspects:
                    seen.setdefault(line, []).append(p.index)
        repeated = {line: where for line, where in seen.items() if len(where) > 1}
        holding = {i for where in repeated.values() for i in where}
        return {orjson.loads(line): len(where) for line, where in repeated.items()}, holding

    def merge(
        self, partitions: list[Partition], out: Path, errors_out: Path | None, more_errors: bytes = b"",
        replaced: frozenset[str] = frozenset(), more_flags: bytes = b"",
    ) -> None:
        """The partitions' output and errors, in partition order, then ``more_*``; the lines of the children in
        ``replaced`` (screened again on their merged records, ``more_flags``) left out."""
        targets: list[tuple[int, Path]] = [(0, out)] + ([(1, errors_out)] if errors_out else [])
        left_out = {orjson.dumps(pid) for pid in replaced}
        for which, target in targets:
            tmp = target.with_name(target.name + ".tmp")
            with tmp.open("wb") as handle:
                for p in partitions:
                    with self._paths(p.index)[which].open("rb") as part:
                        if which == 0 and replaced:
                            handle.writelines(line for line in part if _patient_of(line) not in left_out)
                        else:
                            shutil.copyfileobj(part, handle)
                handle.write(more_errors if which == 1 else more_flags)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)


_ID_AT = len(b'{"patient_id":')


def _patient_of(line: bytes) -> bytes:
    """The JSON-encoded patient id an output line (:func:`_line`) begins with, without parsing the line."""
    return line[_ID_AT : line.index(b',"patient":', _ID_AT)]


def _add(summary: RunSummary, info: dict[str, Any]) -> None:
    for key in _COUNTS:
        summary.counts[key] += int(info["counts"].get(key, 0))
    summary.model_version, summary.threshold = info["model_version"], info["threshold"]


def _progress_bar(total: int, unit: str, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    # disable=None: drawn on a terminal only; stderr redirected to a log (cron, CI) had filled with bar redraws.
    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, file=sys.stderr, disable=True if quiet else None)


def run_population(
    input_path: Path,
    out: Path,
    options: RunOptions,
    errors_out: Path | None = None,
    work: Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = False,
    keep_work: bool = False,
    screener: Screener | None = None,
) -> RunSummary:
    """Screen the extract at ``input_path`` into ``out`` (and ``errors_out``); see the module doc.

    ``screener``: one already loaded with these options, for a run in this process (tests, the API).
    """
    folder = _WorkFolder(work or out.with_name(out.name + ".work"))
    fingerprint = _fingerprint(input_path, options)
    partitions = folder.partitions_for(fingerprint)
    began = time.perf_counter()
    if partitions is None:
        size = sum(p.stat().st_size for p in input_files(input_path))
        with _progress_bar(size, "B", "reading extract", quiet) as bar:
            partitions = folder.start(
                fingerprint, lambda split: plan_partitions(input_path, split, options.partition_bytes, bar.update)
            )
    summary = RunSummary(partitions=len(partitions), seconds_splitting=time.perf_counter() - began)
    todo = []
    for p in partitions:
        info = folder.done(p.index)
        if info is None:
            todo.append(p)
        else:
            summary.resumed += 1
            _add(summary, info)
    if summary.resumed:
        logger.info("resuming: %d of %d partitions were done", summary.resumed, len(partitions))
    with _progress_bar(len(partitions), " partition", "screening", quiet) as bar:
        bar.update(summary.resumed)

        def finished(result: PartitionResult) -> None:
            _add(summary, folder.keep(result))
            children = sum(summary.counts[k] for k in ("screened", "incomplete", "not_screened"))
            bar.set_postfix(children=children, flagged=summary.counts["flagged"], refresh=False)
            bar.update(1)

        began = time.perf_counter()
        if todo and (scheduler or workers > 1):
            from screening.population_dask import run_on_dask

            summary.seconds_loading = run_on_dask(todo, options, workers, scheduler, finished)
        elif todo:
            if screener is None:
                screener = load_screener(options)
                summary.seconds_loading = time.perf_counter() - began
            for p in todo:
                finished(screen_partition(screener, p, options))
    repeated, holding = folder.repeated_patients(partitions)
    summary.counts["repeated_patients"] = len(repeated)
    merged_lines = b""
    if repeated:
        # Each record screened alone was part of the child: screen the child once, on all of them.
        screener = screener or load_screener(options)
        merged_lines, delta = _screen_merged(screener, partitions, set(repeated), options, holding)
        for key, change in delta.items():
            summary.counts[key] += change
    folder.merge(partitions, out, errors_out, b"".join(
        orjson.dumps({
            "source": input_path.name, "record": f"patient {pid}",
            "reason": f"patient {pid!r} is in {n} records of the extract: screened once, on the records together "
            "(the first one's birth date and sex); give each child one record (one Bundle, or a Bulk Data export)",
        }) + b"\n"
        for pid, n in sorted(repeated.items())
    ), frozenset(repeated), merged_lines)
    summary.seconds_screening = time.perf_counter() - began - summary.seconds_loading
    if not keep_work:
        shutil.rmtree(folder.root, ignore_errors=True)
    return summary
