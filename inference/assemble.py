"""Assemble what each task's model needs from a study's stored instances.

CT: the best axial series as a volume ordered along the slice normal (ImagePositionPatient and
ImageOrientationPatient), spacing from the headers. MG: each view with its laterality and view position.
CR/DX: the frontal image. Unusable input raises :class:`CouldNotScore` with the reason; it is never
scored silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread

from datasets.dicom_series import Volume, is_axial, slice_position, volume_from_datasets
from datasets.errors import DatasetError
from datasets.preprocess import ImageArray, dicom_to_array
from inference.errors import CouldNotScore, IngestError
from inference.instance_limits import read_within_limits
from inference.intended_use import view_of

__all__ = [
    "MammographyView", "read_study", "frontal_radiographs", "mammography_views", "ct_series", "decode",
]

_FRONTAL = {"PA", "AP", ""}
_MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"


@dataclass(frozen=True)
class MammographyView:
    laterality: str  # "L" or "R"
    view_position: str  # "CC", "MLO", ...
    dataset: Any


def read_study(paths: Iterable[Path], *, max_bytes: int | None = None) -> list[Any]:
    """The stored instances of a study; with ``max_bytes``, each checked against the instance size limits first."""
    datasets = []
    for path in paths:
        try:
            datasets.append(dcmread(path) if max_bytes is None else read_within_limits(Path(path), max_bytes))
        except IngestError as exc:
            raise CouldNotScore(f"stored instance {Path(path).name}: {exc.reason}") from exc
        except Exception as exc:  # noqa: BLE001 - a stored file that no longer parses is unusable input
            raise CouldNotScore(f"stored instance {Path(path).name} cannot be read: {exc}") from exc
    return datasets


def decode(ds: Any, *, apply_voi: bool = True) -> ImageArray:
    try:
        return dicom_to_array(ds, apply_voi=apply_voi)
    except DatasetError as exc:
        raise CouldNotScore(f"instance {ds.SOPInstanceUID}: {exc}") from exc


def _number(ds: Any, keyword: str, default: float) -> float:
    value = getattr(ds, keyword, None)
    try:
        return default if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return default


def frontal_radiographs(datasets: list[Any]) -> list[Any]:
    """The frontal films of a study's best view (PA, then AP, then unlabelled: the chest-xray model learnt on frontal
    films), more than one when a film was repeated; in instance-number order, then by UID, whatever order they
    arrived in."""
    radiographs = [ds for ds in datasets if str(getattr(ds, "Modality", "")) in ("CR", "DX")]
    if not radiographs:
        raise CouldNotScore("no CR/DX image in the study")
    # The view as the header states it anywhere (an empty ViewPosition beside a View Code Sequence "lateral").
    frontal = [ds for ds in radiographs if view_of(ds) in _FRONTAL]
    if not frontal:
        views = sorted({view_of(ds) for ds in radiographs})
        raise CouldNotScore(f"no frontal (PA/AP) view among {len(radiographs)} radiographs (views: {', '.join(views)})")
    rank = {"PA": 0, "AP": 1, "": 2}
    best = min(rank[view_of(ds)] for ds in frontal)
    return sorted(
        (ds for ds in frontal if rank[view_of(ds)] == best),
        key=lambda ds: (_number(ds, "InstanceNumber", float("inf")), str(ds.SOPInstanceUID)),
    )


def _laterality(ds: Any) -> str:
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(getattr(ds, keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return ""


def mammography_views(datasets: list[Any]) -> list[MammographyView]:
    images = [ds for ds in datasets if str(getattr(ds, "Modality", "")) == "MG"]
    presentation = [ds for ds in images if str(ds.SOPClassUID) != _MG_PROCESSING]
    # Score the images a radiologist reads (for presentation) when the study has them.
    images = presentation or images
    if not images:
        raise CouldNotScore("no MG image in the study")
    views = []
    for ds in images:
        laterality = _laterality(ds)
        if not laterality:
            raise CouldNotScore(f"MG image {ds.SOPInstanceUID} has no laterality (ImageLaterality/Laterality)")
        views.append(MammographyView(laterality, view_of(ds), ds))
    return views


def _series_rank(series: list[Any]) -> tuple[int, float, float, str]:
    """Most slices first; among as many (a study's lung and soft-tissue reconstructions, two contrast phases), the
    thinnest, then the lowest series number, then the UID: the same series whatever order the instances arrived in
    (the first to arrive had won a tie)."""
    first = series[0]
    return (
        -len(series),
        _number(first, "SliceThickness", float("inf")),
        _number(first, "SeriesNumber", float("inf")),
        str(first.SeriesInstanceUID),
    )


def ct_series(datasets: list[Any], *, min_slices: int, max_spacing_deviation: float = 0.25) -> Volume:
    """The axial series with the most slices (:func:`_series_rank` on a tie), as a volume; refuses too few slices
    or uneven spacing."""
    by_series: dict[str, list[Any]] = defaultdict(list)
    for ds in datasets:
        if str(getattr(ds, "Modality", "")) == "CT" and "ImagePositionPatient" in ds and is_axial(ds):
            by_series[str(ds.SeriesInstanceUID)].append(ds)
    if not by_series:
        raise CouldNotScore("no axial CT series with ImagePositionPatient/ImageOrientationPatient")
    best = min(by_series.values(), key=_series_rank)
    if len(best) < min_slices:
        raise CouldNotScore(f"best axial CT series has {len(best)} slices; at least {min_slices} are needed")
    gaps = np.diff(np.sort([slice_position(ds) for ds in best]))
    if np.any(gaps < 1e-3):
        raise CouldNotScore("CT series has duplicate slice positions")
    median = float(np.median(gaps))
    worst = float(np.max(np.abs(gaps - median)) / median)
    if worst > max_spacing_deviation:
        raise CouldNotScore(
            f"inconsistent slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm (median {median:.2f} mm)"
        )
    try:
        volume = volume_from_datasets(best)
    except DatasetError as exc:
        raise CouldNotScore(f"CT series cannot be assembled: {exc}") from exc
    # Resampling divides by the spacing: a zero, negative or missing one is bad input, not a crash to retry.
    if not all(np.isfinite(mm) and mm > 0 for mm in volume.spacing_mm):
        raise CouldNotScore(f"CT series has an impossible voxel spacing {volume.spacing_mm} mm")
    return volume
