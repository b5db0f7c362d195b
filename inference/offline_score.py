"""Score DICOM files offline: group them into studies, route them, score each with its task's champion.

This is how a site evaluates the models on its own data before connecting the PACS: one JSON line per
study on stdout, a progress bar on stderr when it is a terminal. Headers are read first (fast, no pixels) to group and route;
pixels are decoded one study at a time, so memory stays flat over thousands of studies.
"""

from __future__ import annotations

import filecmp
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from datasets.dicom_folder import dicom_files, group_into_studies
from inference.assemble import read_study
from inference.champions import ModelSelector
from inference.errors import CouldNotScore, DifferingDuplicate, IngestError, ModelUnavailable, OutOfScope
from inference.instance_headers import InstanceHeaders, read_instance_headers
from inference.intended_use import patient_age_years
from inference.route import RoutingRules
from inference.scorers import score_study
from service.lifecycle import ModelRole, SteeringRight

__all__ = ["OfflineStudy", "collect_studies", "score_offline"]

log = logging.getLogger(__name__)


@dataclass
class OfflineStudy:
    study_instance_uid: str
    paths: list[Path] = field(default_factory=list)
    series: dict[str, dict[str, str]] = field(default_factory=dict)


def collect_studies(
    paths: Iterable[Path],
    *,
    progress: bool = True,
    on_refused: Callable[[Path, IngestError], None] | None = None,
) -> tuple[list[OfflineStudy], dict[str, int]]:
    """Group files into studies (the one folder reader, ``datasets.dicom_folder``), each instance checked as
    ingest would check it and kept once per SOP Instance UID (the first file, as ingest stores it); returns the
    studies and the count of refused files per reason (a copy of an instance with other bytes: ``differing-duplicate``)."""
    refused: dict[str, int] = defaultdict(int)

    def read(path: Path) -> InstanceHeaders | None:
        try:
            return read_instance_headers(path)
        except IngestError as exc:
            refused[exc.kind] += 1
            if on_refused is not None:
                on_refused(path, exc)
            return None

    repeated = 0

    def duplicate(path: Path, first: Path) -> None:
        # As ingest: an identical copy of an instance is the same instance; one with other bytes is refused.
        nonlocal repeated
        if filecmp.cmp(path, first, shallow=False):
            repeated += 1
            return
        exc = DifferingDuplicate(f"its SOP Instance UID is that of {first}, with other bytes; the first file is kept")
        refused[exc.kind] += 1
        if on_refused is not None:
            on_refused(path, exc)

    # disable=None: drawn on a terminal only; stderr redirected to a log (cron, CI) had filled with bar redraws.
    files = tqdm(list(dicom_files(paths)), desc="reading headers", unit="file", disable=None if progress else True)
    found = group_into_studies(files, read, lambda h: (h.study_instance_uid, h.series_instance_uid),
                               instance_uid=lambda h: h.sop_instance_uid, on_duplicate=duplicate)
    if repeated:
        # A study exported twice, or a folder given with its own sub-folder: scored once, as the service would.
        log.warning("%d files repeat an instance already read (same SOP Instance UID and bytes): each instance is read once",
                    repeated)
    studies = [
        OfflineStudy(
            study.study_instance_uid,
            study.paths,
            {uid: headers.series_headers() for uid, headers in study.headers.items()},
        )
        for study in found
    ]
    return studies, dict(refused)


def _line(study: OfflineStudy, task: str | None, **values: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "study_instance_uid": study.study_instance_uid,
        "task": task,
        "score": None,
        "call": None,
        "threshold": None,
        "model_name": None,
        "model_version": None,
        "steering": None,
        "call_note": None,
        "mlflow_run_id": None,
        "localisation": None,
        "instances": len(study.paths),
        "error": None,
        "assumed": None,
    }
    line.update(values)
    return line


def _call_note(steering: SteeringRight) -> str | None:
    """What the call may be taken for: a shadow version's (its card's figures do not support acting on it) had read
    as a plain "positive" beside the others', on a site's own evaluation of the models."""
    if steering == SteeringRight.shadow:
        return "shadow: recorded for monitoring, not a finding"
    return None


def _assume_age(datasets: list[Any], years: int) -> dict[str, Any] | None:
    """Give the images whose headers state no age ``years`` (PatientAge); what was assumed, or None."""
    unknown = [ds for ds in datasets if patient_age_years(ds) is None]
    for ds in unknown:
        ds.PatientAge = f"{years:03d}Y"
    return {"patient_age_years": years, "images": len(unknown)} if unknown else None


def score_offline(
    studies: list[OfflineStudy],
    rules: RoutingRules,
    selector: ModelSelector,
    out: IO[str],
    *,
    min_ct_slices: int,
    progress: bool = True,
    assume_age_years: int | None = None,
    max_decoded_mb: int = 4096,
) -> dict[str, int]:
    """Write one JSON line per study to ``out``; returns counts by outcome.

    ``assume_age_years``: the operator's statement of the age of patients whose headers give none (a research
    set stripped of demographics, such as a public data set known to be of children aged 1-5). Only such
    images get it, in memory, before the intended-use check; a header that gives an age is never
    overridden, and the study's line says what was assumed (``assumed``). Offline only: the service never
    assumes."""
    counts: dict[str, int] = defaultdict(int)
    selector.refresh(force=True)
    for study in tqdm(studies, desc="scoring studies", unit="study", disable=None if progress else True):
        decision = rules.route(study.study_instance_uid, 1, list(study.series.values()))
        if decision.task is None:
            line = _line(study, None, error="not applicable: " + "; ".join(decision.reasons))
            counts["not_applicable"] += 1
        else:
            version = selector.version_for(decision.task, ModelRole.champion)
            assumed = None
            try:
                if version is None:
                    raise ModelUnavailable(f"no champion model registered for {decision.task}")
                model = selector.load(decision.task, version)
                datasets = read_study(study.paths)
                assumed = _assume_age(datasets, assume_age_years) if assume_age_years is not None else None
                scored = score_study(
                    decision.task, model, datasets, min_ct_slices=min_ct_slices, max_decoded_mb=max_decoded_mb
                )
                line = _line(
                    study,
                    decision.task,
                    score=round(scored.score, 6),
                    call="positive" if scored.score >= model.threshold else "negative",
                    threshold=model.threshold,
                    model_name=model.name,
                    model_version=model.version,
                    steering=str(model.steering),
                    call_note=_call_note(model.steering),
                    mlflow_run_id=model.run_id,
                    localisation=scored.localisation,
                    assumed=assumed,
                )
                counts["scored"] += 1
            except OutOfScope as exc:
                line = _line(study, decision.task, model_name=decision.task, model_version=version,
                             error=f"out of scope: {exc.reason}", assumed=assumed)
                counts["out_of_scope"] += 1
            except (CouldNotScore, ModelUnavailable) as exc:
                line = _line(study, decision.task, model_name=decision.task, model_version=version,
                             error=f"could not score: {exc.reason}", assumed=assumed)
                counts["could_not_score"] += 1
            except Exception as exc:  # noqa: BLE001 - one study's unforeseen failure is its line, never the end of the run
                log.warning("could not score a %s study: %s: %s", decision.task, type(exc).__name__, exc, exc_info=True)
                line = _line(study, decision.task, model_name=decision.task, model_version=version,
                             error=f"could not score: {type(exc).__name__}: {exc}", assumed=assumed)
                counts["could_not_score"] += 1
        out.write(json.dumps(line) + "\n")
        out.flush()
    return dict(counts)
