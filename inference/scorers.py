"""Run a task's ONNX model on its assembled input: a probability, a coarse localisation, a heat-map.

The model I/O contract comes from the version's ``bundle.json`` (input name and size, preprocessing,
score and localisation outputs, operating point), so a retrained version needs no code change here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from datasets.breast_heatmap import breast_heatmap
from datasets.ct_candidates import Candidate, extract_patches, find_candidates, search_bytes
from datasets.dicom_series import Volume, declared_geometry, is_axial
from datasets.lung_fields import heatmap_within, lung_fields
from datasets.preprocess import PreprocessSpec, prepare_image
from inference.assemble import ct_series, decode, frontal_radiographs, mammography_views
from inference.champions import LoadedModel
from inference.errors import CouldNotScore
from inference.film_orientation import frontal_mirror_axes, mirrored
from inference.intended_use import check_intended_use
from service.lifecycle import Task
from service.settings import DEFAULT_MAX_STUDY_DECODED_MB

__all__ = ["TaskScore", "RegionScore", "score_study", "score_task", "SCORERS"]


@dataclass(frozen=True)
class RegionScore:
    """One image's own score and where on it the model looked: one TID 1500 measurement group in the SR."""

    source: Any  # the image (dataset) the point is on
    point: list[float] | None  # (column, row) in the image's pixels
    score: float
    label: str = ""


@dataclass(frozen=True)
class TaskScore:
    score: float
    localisation: dict[str, Any]
    source: Any  # the dataset the localisation refers to (for the SR region and the heat-map overlay)
    heatmap: np.ndarray | None = field(default=None, repr=False)  # [rows, cols] in [0, 1] over the model input
    # The model's input image [rows, cols] in [0, 1], and the heat-map, in the stored image's orientation (a mirrored
    # film is turned for the model and its outputs turned back, so that they lie on the stored pixels).
    image: np.ndarray | None = field(default=None, repr=False)
    # Every image scored on its own (each mammography view, the top CT candidates' slices), best first.
    regions: list[RegionScore] = field(default_factory=list)


def _score_of(model: LoadedModel, outputs: dict[str, Any]) -> np.ndarray:
    name = model.bundle.get("score_output") or next(iter(outputs))
    values = np.asarray(outputs[name], dtype=np.float64)
    index = int(model.bundle.get("score_index", 0))
    return values.reshape(values.shape[0], -1)[:, index]


def _heatmap_of(model: LoadedModel, outputs: dict[str, Any]) -> np.ndarray | None:
    localisation = model.bundle.get("localisation") or {}
    if localisation.get("kind") != "heatmap" or localisation.get("output") not in outputs:
        return None
    values = np.asarray(outputs[localisation["output"]], dtype=np.float32)
    if values.ndim == 4:  # [N, channels, rows, cols]: the channel of the score the call is made on
        channel = min(int(model.bundle.get("score_index", 0)), values.shape[1] - 1)
        values = values[:, channel]
    return values.reshape(values.shape[0], values.shape[-2], values.shape[-1])


def _probability(value: float, of: str) -> float:
    """``value`` when it is a probability; CouldNotScore otherwise. Checked for every image and candidate, not only the
    study's: the study takes the most suspicious one, and max() passes over a NaN after a number (NaN compares false),
    so a film or view scored NaN had been taken for a negative one."""
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise CouldNotScore(f"model returned a score outside [0, 1]: {value} ({of})")
    return value


def _candidate_marker(shape: tuple[int, int], row: float, col: float, radius_px: float) -> np.ndarray:
    """A soft disc at the candidate, drawn by the heat-map overlay as the CT marker."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((rr - row) ** 2 + (cc - col) ** 2) / (2.0 * radius_px**2)).astype(np.float32)


def _image_score(model: LoadedModel, ds: Any, *, lungs: bool = False) -> TaskScore:
    """One image scored; ``lungs``: a frontal chest film, turned to ``L\\F`` (``inference.film_orientation``) for the
    model, its heat-map kept to the lung fields (``datasets.lung_fields``)."""
    spec = PreprocessSpec.from_dict(model.bundle["preprocess"])
    # A film stored mirrored (rows toward the patient's right) had been scored as stored: the chest model learnt the
    # heart on the viewer's right, and 7 of 20 mirrored films moved by more than 0.05. A mammogram is not turned: its
    # networks learnt both breasts' sides (flip augmentation) and its map finds the chest wall from the tissue.
    axes = frontal_mirror_axes(ds) if lungs else ()
    image = prepare_image(mirrored(decode(ds, apply_voi=True), axes), spec)
    outputs = model.run(image)
    score = _probability(float(_score_of(model, outputs)[0]), f"image {ds.SOPInstanceUID}")
    extra: dict[str, Any] = {}
    if "malignant_index" in model.bundle:
        # Mammography also estimates malignancy; shown beside the suspicion score, never used for the call.
        name = model.bundle.get("score_output") or next(iter(outputs))
        values = np.asarray(outputs[name], dtype=np.float64).reshape(1, -1)
        extra["malignant_probability"] = _probability(
            float(values[0, int(model.bundle["malignant_index"])]), f"malignancy of image {ds.SOPInstanceUID}"
        )
    heatmaps = _heatmap_of(model, outputs)
    localisation: dict[str, Any] = {"kind": "image", "sop_instance_uid": str(ds.SOPInstanceUID)}
    heatmap = None
    if heatmaps is not None:
        heatmap = heatmaps[0]
        grid = heatmap.shape
        values = heatmap  # the heat-map in the model's units, for the value at the peak
        if lungs:
            fields = lung_fields(image[0, 0])
            heatmap, values = heatmap_within(heatmap, fields.mask)
            extra["organ_mask"] = f"lung fields ({fields.method})"
        elif (model.bundle.get("preprocess", {}).get("extra") or {}).get("mask") == "breast":
            # The bundle names the map chosen out of fold (``training.mammography_figures``); a bundle
            # from before that choice gets the network's own map kept to the tissue.
            variant = str((model.bundle.get("localisation") or {}).get("map", "cnn-tissue"))
            heatmap, values, tissue = breast_heatmap(heatmap, image[0, 0], variant=variant)
            extra["organ_mask"] = tissue.method
            extra["heatmap_map"] = variant
        row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        peak_value = float(values[row, col])
        if axes:
            # The peak is found where the model looked, then taken to the stored pixels with the map (a plateau's
            # first cell, found on the stored map, would be another of its cells).
            heatmap = np.ascontiguousarray(np.flip(heatmap, axes))
            row = heatmap.shape[0] - 1 - row if 0 in axes else row
            col = heatmap.shape[1] - 1 - col if 1 in axes else col
        rows, cols = int(ds.Rows), int(ds.Columns)
        localisation = {
            "kind": "heatmap",
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "grid": [int(grid[0]), int(grid[1])],
            "peak_cell": [int(row * grid[0] // heatmap.shape[0]), int(col * grid[1] // heatmap.shape[1])],
            "peak_value": peak_value,
            # Centre of the hottest cell (pixel of the interpolated map) in the source image's pixel
            # coordinates (column, row).
            "point": [float((col + 0.5) * cols / heatmap.shape[1]), float((row + 0.5) * rows / heatmap.shape[0])],
        }
    localisation.update(extra)
    region = RegionScore(ds, localisation.get("point"), score)
    shown = np.ascontiguousarray(np.flip(image[0, 0], axes)) if axes else image[0, 0]
    return TaskScore(score, localisation, ds, heatmap, shown, [region])


def _is_colour(ds: Any) -> bool:
    return int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1 or str(getattr(ds, "PhotometricInterpretation", "")).strip() == (
        "PALETTE COLOR"
    )


def _score_each(model: LoadedModel, images: list[Any], *, lungs: bool = False) -> tuple[list[int], list[TaskScore], list[dict[str, str]]]:
    """Each image scored: (the indices of those scored, their scores, the colour images left out with the reason).

    A colour image cannot be scored (the models read greyscale films), but it is one image: another product's colour
    overlay that reached the study made the whole revision "could not score", which cancelled the call made on the
    study's own films. It is left out and named on the result; any other unusable image still fails the study, and
    so does a study of colour images only."""
    kept: list[int] = []
    scored: list[TaskScore] = []
    left_out: list[dict[str, str]] = []
    first: CouldNotScore | None = None
    for index, ds in enumerate(images):
        try:
            scored.append(_image_score(model, ds, lungs=lungs))
        except CouldNotScore as exc:
            if not _is_colour(ds):
                raise
            first = first or exc
            left_out.append({"sop_instance_uid": str(ds.SOPInstanceUID), "reason": exc.reason})
        else:
            kept.append(index)
    if first is not None and not scored:
        raise first
    return kept, scored, left_out


def score_chest_xray(model: LoadedModel, datasets: list[Any], *, min_ct_slices: int,
                     max_decoded_mb: int = DEFAULT_MAX_STUDY_DECODED_MB) -> TaskScore:
    """The frontal film; a study with more than one of its view (a repeated exposure) has each scored, and its
    score is the most suspicious film's, as a mammogram's is its most suspicious view's: a model that may only raise
    a study sees every film (the lower instance number on a tie)."""
    candidates = frontal_radiographs(datasets)
    kept, scored, left_out = _score_each(model, candidates, lungs=True)
    films = [candidates[i] for i in kept]
    best = max(scored, key=lambda s: s.score)
    if left_out:
        best.localisation["left_out"] = left_out
    if len(scored) > 1:
        best = replace(best, regions=sorted((s.regions[0] for s in scored), key=lambda r: -r.score))
        best.localisation["films"] = [
            {"sop_instance_uid": str(ds.SOPInstanceUID), "score": s.score} for ds, s in zip(films, scored, strict=True)
        ]
    return best


def score_mammography(model: LoadedModel, datasets: list[Any], *, min_ct_slices: int,
                      max_decoded_mb: int = DEFAULT_MAX_STUDY_DECODED_MB) -> TaskScore:
    """Each view is scored; the study's score is its most suspicious view's."""
    candidates = mammography_views(datasets)
    kept, scored, left_out = _score_each(model, [view.dataset for view in candidates])
    views = [candidates[i] for i in kept]
    for view, result in zip(views, scored, strict=True):
        result.localisation.update(laterality=view.laterality, view_position=view.view_position)
    best = max(scored, key=lambda s: s.score)
    if left_out:
        best.localisation["left_out"] = left_out
    best = replace(best, regions=sorted(
        (RegionScore(s.source, s.localisation.get("point"), s.score, f"{v.laterality} {v.view_position}".strip())
         for v, s in zip(views, scored, strict=True)),
        key=lambda r: -r.score,
    ))
    best.localisation["views"] = [
        {"laterality": v.laterality, "view_position": v.view_position, "score": s.score} for v, s in zip(views, scored, strict=True)
    ]
    return best


def _refuse_past_budget(datasets: list[Any], max_decoded_mb: int) -> None:
    """Refuse, before decoding, a study whose CT series would take more than the budget to decode and search.

    Every axial series the scorer may pick is checked, from Rows, Columns, PixelSpacing and the slice count:
    no limit on one instance bounds these (40 slices of 4096x4096, 284 kB of JPEG-LS, took 4.4 GB).
    """
    by_series: dict[str, list[Any]] = defaultdict(list)
    for ds in datasets:
        if str(getattr(ds, "Modality", "")) == "CT" and "ImagePositionPatient" in ds and is_axial(ds):
            by_series[str(ds.SeriesInstanceUID)].append(ds)
    for series in by_series.values():
        slices, rows, cols, row_mm, col_mm = geometry = declared_geometry(series)
        need = search_bytes(*geometry)
        if need > max_decoded_mb << 20:
            raise CouldNotScore(
                f"CT series of {slices} slices of {cols}x{rows} pixels ({row_mm:g}x{col_mm:g} mm) needs about "
                f"{need >> 20:,} MB to decode and search, over the {max_decoded_mb:,} MB study budget "
                f"(MEDSCREEN_MAX_STUDY_DECODED_MB)"
            )


def score_ct(model: LoadedModel, datasets: list[Any], *, min_ct_slices: int,
             max_decoded_mb: int = DEFAULT_MAX_STUDY_DECODED_MB) -> TaskScore:
    """Candidate nodules in the lungs, each patch scored; the study's score is the highest candidate's."""
    _refuse_past_budget(datasets, max_decoded_mb)
    volume = ct_series(datasets, min_slices=min_ct_slices)
    candidates = find_candidates(volume)
    source_by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    if not candidates:
        middle = volume.sop_instance_uids[len(volume.sop_instance_uids) // 2]
        return TaskScore(0.0, {"kind": "candidates", "count": 0}, source_by_uid[middle])
    patches = extract_patches(volume, candidates)
    scores = np.concatenate([_score_of(model, model.run(patches[i : i + 64])) for i in range(0, len(patches), 64)])
    invalid = np.flatnonzero(~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0))
    if invalid.size:
        _probability(float(scores[invalid[0]]), f"candidate {int(invalid[0]) + 1} of {len(scores)}")
    best = int(np.argmax(scores))
    candidate = candidates[best]
    uid = volume.sop_instance_uids[candidate.slice_index]
    threshold = float(model.threshold)
    # Every candidate at or above the operating point (at least the top five), each with its slice,
    # so that the SR and the page can name where to look, not only the best one.
    listed = [int(i) for i in np.argsort(-scores) if scores[i] >= threshold] or [int(i) for i in np.argsort(-scores)[:5]]
    localisation = {
        "kind": "candidate",
        "sop_instance_uid": uid,
        "slice_index": candidate.slice_index,
        "point": [float(candidate.col), float(candidate.row)],
        "z_mm": float(volume.z_positions[candidate.slice_index]),
        "diameter_mm": round(candidate.diameter_mm, 1),
        "count": len(candidates),
        "top": [
            {"slice_index": candidates[i].slice_index, "row": candidates[i].row, "col": candidates[i].col,
             "score": float(scores[i])}
            for i in np.argsort(-scores)[:5]
        ],
        "candidates": [
            {
                "slice_index": candidates[i].slice_index,
                "sop_instance_uid": volume.sop_instance_uids[candidates[i].slice_index],
                "instance_number": _instance_number(source_by_uid[volume.sop_instance_uids[candidates[i].slice_index]]),
                "z_mm": float(volume.z_positions[candidates[i].slice_index]),
                "row": candidates[i].row,
                "col": candidates[i].col,
                "diameter_mm": round(candidates[i].diameter_mm, 1),
                "score": float(scores[i]),
            }
            for i in listed
        ],
    }
    window = np.clip((volume.hu[candidate.slice_index] + 1350.0) / 1500.0, 0.0, 1.0)
    # Each distinct finding among the listed candidates becomes an SR region on its best slice; the result
    # keeps every listed candidate. Per-slice candidates put one nodule on 3-10 slices, and a positive
    # 300-slice series gave 256 regions whose SR took 10.6 s to build at load 8.
    regions = [
        RegionScore(source_by_uid[volume.sop_instance_uids[candidates[i].slice_index]],
                    [float(candidates[i].col), float(candidates[i].row)], float(scores[i]),
                    f"candidate {rank}, {candidates[i].diameter_mm:.0f} mm")
        for rank, i in enumerate(_distinct_findings(volume, candidates, listed), start=1)
    ]
    radius_px = max(candidate.diameter_mm / 2.0, 4.0) / float(volume.spacing_mm[1])
    marker = _candidate_marker(window.shape, candidate.row, candidate.col, radius_px)
    return TaskScore(float(scores[best]), localisation, source_by_uid[uid], marker, window, regions)


# Candidates closer than this (3-D, mm) to a better-scoring one are taken as the same finding.
FINDING_SEPARATION_MM = 10.0


def _distinct_findings(volume: Volume, candidates: list[Candidate], ranked: list[int]) -> list[int]:
    """The ranked candidates (best first) without those within ``FINDING_SEPARATION_MM`` of a better one."""
    _, row_mm, col_mm = volume.spacing_mm
    kept: list[int] = []
    positions: list[np.ndarray] = []
    for i in ranked:
        c = candidates[i]
        here = np.array([volume.z_positions[c.slice_index], c.row * row_mm, c.col * col_mm])
        if all(float(np.linalg.norm(here - p)) >= FINDING_SEPARATION_MM for p in positions):
            kept.append(i)
            positions.append(here)
    return kept


def _instance_number(ds: Any) -> int | None:
    value = getattr(ds, "InstanceNumber", None)
    return int(value) if value not in (None, "") else None


SCORERS: dict[str, Callable[..., TaskScore]] = {
    Task.chest_xray: score_chest_xray,
    Task.mammography: score_mammography,
    Task.ct_chest: score_ct,
}


def score_study(task: str, model: LoadedModel, datasets: list[Any], *, min_ct_slices: int,
                max_decoded_mb: int = DEFAULT_MAX_STUDY_DECODED_MB) -> TaskScore:
    """A study scored by ``model``: its intended-use gate first, then the task's scorer on the images the gate
    admitted only, so that no image the gate left out (a view it does not list) is scored or sets the score.

    Raises :class:`OutOfScope` when the study is outside the version's intended use.
    """
    use = model.intended_use
    admitted = check_intended_use(use, datasets, model.label) if use is not None else list(datasets)
    return score_task(task, model, admitted, min_ct_slices=min_ct_slices, max_decoded_mb=max_decoded_mb)


def score_task(task: str, model: LoadedModel, datasets: list[Any], *, min_ct_slices: int,
               max_decoded_mb: int = DEFAULT_MAX_STUDY_DECODED_MB) -> TaskScore:
    """The task's scorer on ``datasets`` as given, without the intended-use gate (a study goes through
    :func:`score_study`; this is for images already admitted, and for benchmarks)."""
    if task not in SCORERS:
        raise CouldNotScore(f"no scorer for task {task}")
    result = SCORERS[task](model, datasets, min_ct_slices=min_ct_slices, max_decoded_mb=max_decoded_mb)
    if not np.isfinite(result.score) or not 0.0 <= result.score <= 1.0:
        raise CouldNotScore(f"model returned a score outside [0, 1]: {result.score}")
    return result
