"""The CT card's localisation figure and pointing game, from the shipped bundle and the LIDC reader marks.

Each development patient is scored by the fold network that never saw it (``fold_scores`` of the shipped
ensemble): its best candidate is drawn with the marker the service draws, beside the reader mark nearest to
it. Training calls :func:`localisation_figure`; ``python -m training.ct_figures models/ct-chest --data
../shared/data`` redraws the figure and rewrites the card's Localisation section and ``metrics.json``'s
``pointing_game`` from the shipped file, without retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.ct_candidates import Candidate, extract_patches, find_candidates
from datasets.dicom_series import Volume
from datasets.lidc import LidcCase
from quality.statistics import wilson_interval
from training.errors import TrainingInputError
from training.task_data import lidc_cases

__all__ = ["LOCALISATION_FIGURE", "ReaderMark", "PatientPointing", "reader_marks", "point_patient",
           "pointing_summary", "localisation_figure", "figures_text", "localisation_text", "redraw"]

log = logging.getLogger(__name__)

LOCALISATION_FIGURE = "candidates_on_reader_marks.png"
MALIGNANCY_POSITIVE = 3  # the CT model's positive class (training.tasks.ct_chest)
# The served marker's radius: the candidate's diameter / 2, at least 4 mm (inference.scorers.score_ct).
MARKER_MIN_RADIUS_MM = 4.0
CROP_MM = 80.0  # side of the zoomed views: a nodule of 3-30 mm with the vessels around it


@dataclass(frozen=True)
class ReaderMark:
    """One reader's contour of one nodule on one slice of the slab (LIDC ``roi``), in pixels."""

    reader: str
    nodule_id: str
    malignancy: int
    slice_index: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def centre(self) -> tuple[float, float]:
        return float(np.mean(self.rows)), float(np.mean(self.cols))

    @property
    def radius_px(self) -> float:
        """Half the larger extent of the contour; at least one pixel (a point mark)."""
        return max(float(np.ptp(self.rows)), float(np.ptp(self.cols)), 2.0) / 2.0

    def contains(self, row: float, col: float) -> bool:
        """Inside the outline (even-odd rule over the contour's vertices) or within its radius of the centre."""
        r0, c0 = self.centre
        if np.hypot(row - r0, col - c0) <= self.radius_px:
            return True
        ys, xs = np.asarray(self.rows, float), np.asarray(self.cols, float)
        if len(ys) < 3:
            return False
        y1, x1 = np.roll(ys, -1), np.roll(xs, -1)
        crosses = (ys > row) != (y1 > row)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = xs + (row - ys) * (x1 - xs) / (y1 - ys)
        return bool(np.count_nonzero(crosses & (col < at)) % 2)


def reader_marks(case: LidcCase, volume: Volume, *, min_malignancy: int = MALIGNANCY_POSITIVE) -> list[ReaderMark]:
    """Every reader contour of a nodule rated >= ``min_malignancy`` on a slice of the slab."""
    z_index = {round(z, 2): i for i, z in enumerate(volume.z_positions)}
    marks = []
    for read in case.reads:
        if (read.malignancy or 0) < min_malignancy:
            continue
        for roi in read.rois:
            index = z_index.get(round(roi.z_mm, 2))
            if index is not None and roi.rows:
                marks.append(ReaderMark(read.reader, read.nodule_id, int(read.malignancy or 0), index, roi.rows, roi.cols))
    return marks


@dataclass(frozen=True)
class PatientPointing:
    """The pointing game of one patient: where the out-of-fold best candidate lies against the reader marks."""

    patient: str
    fold: int
    n_candidates: int
    n_marks: int
    score: float
    slice_index: int
    row: int
    col: int
    diameter_mm: float
    hit: bool  # on the candidate's slice, inside a reader's outline (or within its radius of the centre)
    nearest_mark_mm: float | None  # 3-D distance to the nearest mark's centre
    nearest_mark: ReaderMark | None

    def summary(self) -> dict[str, Any]:
        fields = asdict(self)
        fields.pop("nearest_mark")
        return fields


def _distance_mm(volume: Volume, candidate: Candidate, mark: ReaderMark) -> float:
    _, row_mm, col_mm = volume.spacing_mm
    r0, c0 = mark.centre
    dz = volume.z_positions[candidate.slice_index] - volume.z_positions[mark.slice_index]
    return float(np.sqrt(dz**2 + ((candidate.row - r0) * row_mm) ** 2 + ((candidate.col - c0) * col_mm) ** 2))


def point_patient(case: LidcCase, volume: Volume, fold: int, score_patches: Callable[[np.ndarray], np.ndarray]) -> PatientPointing:
    """Score the patient's candidates (``score_patches``: patches -> [N] scores) and play the pointing game."""
    candidates = find_candidates(volume)
    marks = reader_marks(case, volume)
    scores = score_patches(extract_patches(volume, candidates)) if candidates else np.zeros(0)
    if not candidates:
        return PatientPointing(case.patient_id, fold, 0, len(marks), 0.0, -1, -1, -1, 0.0, False, None, None)
    best = candidates[int(np.argmax(scores))]
    hit = any(m.slice_index == best.slice_index and m.contains(best.row, best.col) for m in marks)
    nearest = min(marks, key=lambda m: _distance_mm(volume, best, m)) if marks else None
    return PatientPointing(
        case.patient_id, fold, len(candidates), len(marks), float(np.max(scores)), best.slice_index, best.row, best.col,
        float(best.diameter_mm), hit, round(_distance_mm(volume, best, nearest), 1) if nearest else None, nearest,
    )


def _crop(centre: tuple[float, float], shape: tuple[int, int], side_px: int) -> tuple[slice, slice]:
    r0 = int(np.clip(round(centre[0]) - side_px // 2, 0, shape[0] - side_px))
    c0 = int(np.clip(round(centre[1]) - side_px // 2, 0, shape[1] - side_px))
    return slice(r0, r0 + side_px), slice(c0, c0 + side_px)


def localisation_figure(volumes: dict[str, Volume], marks: dict[str, list[ReaderMark]], pointing: list[PatientPointing], out_path: Path) -> Path:
    """One column per patient: the best candidate's slice with the served marker (top), the reader mark nearest to
    it on its own slice with every reader's outline and centre of that nodule (bottom); both zoomed to 80 mm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(pointing), figsize=(2.6 * len(pointing), 5.6), dpi=110, squeeze=False)
    for column, p in enumerate(pointing):
        volume = volumes[p.patient]
        pixel_mm = float(volume.spacing_mm[1])
        side = int(round(CROP_MM / pixel_mm))
        top, bottom = axes[0, column], axes[1, column]
        for ax in (top, bottom):
            ax.axis("off")
        if p.slice_index < 0:
            top.set_title(f"{p.patient}: no candidate", fontsize=7)
            continue
        # Top: the candidate's slice, the service's lung-window image and its red marker disc.
        rows, cols = _crop((p.row, p.col), volume.hu.shape[1:], side)
        window = np.clip((volume.hu[p.slice_index] + 1350.0) / 1500.0, 0.0, 1.0)[rows, cols]
        top.imshow(window, cmap="gray", vmin=0, vmax=1)
        radius_px = max(p.diameter_mm / 2.0, MARKER_MIN_RADIUS_MM) / pixel_mm
        rr, cc = np.mgrid[rows, cols]
        marker = np.exp(-((rr - p.row) ** 2 + (cc - p.col) ** 2) / (2.0 * radius_px**2))
        overlay = np.zeros((*marker.shape, 4), np.float32)
        overlay[..., 0], overlay[..., 1], overlay[..., 3] = 1.0, 0.15, 0.6 * marker**2
        top.imshow(overlay)
        top.plot(p.col - cols.start, p.row - rows.start, "+", color="yellow", ms=8, mew=1.5)
        # Reader outlines on the candidate's slice too, so a hit or a miss is visible on one image.
        for m in marks[p.patient]:
            if m.slice_index == p.slice_index:
                top.plot(np.r_[m.cols, m.cols[0]] - cols.start, np.r_[m.rows, m.rows[0]] - rows.start, color="cyan", lw=0.6)
        top.set_title(
            f"{p.patient} (fold {p.fold + 1}, out of fold)\nbest of {p.n_candidates} candidates: slice {p.slice_index}, "
            f"row {p.row}, col {p.col}\np={p.score:.3f}, {'inside a reader outline' if p.hit else 'outside every reader outline'}",
            fontsize=6,
        )
        mark = p.nearest_mark
        if mark is None:
            bottom.set_title("no reader mark rated >= 3 on the slab", fontsize=6)
            continue
        # Bottom: the nearest reader mark on its own slice, with every reader's outline of that nodule there.
        rows, cols = _crop(mark.centre, volume.hu.shape[1:], side)
        bottom.imshow(np.clip((volume.hu[mark.slice_index] + 1350.0) / 1500.0, 0.0, 1.0)[rows, cols], cmap="gray", vmin=0, vmax=1)
        same = [m for m in marks[p.patient] if m.slice_index == mark.slice_index]
        for m in same:
            if len(m.rows) >= 3:
                bottom.plot(np.r_[m.cols, m.cols[0]] - cols.start, np.r_[m.rows, m.rows[0]] - rows.start, color="cyan", lw=0.6)
            bottom.plot(m.centre[1] - cols.start, m.centre[0] - rows.start, "x", color="cyan", ms=5, mew=1)
        if mark.slice_index == p.slice_index:
            bottom.plot(p.col - cols.start, p.row - rows.start, "+", color="yellow", ms=8, mew=1.5)
        readers = len({m.reader for m in same})
        bottom.set_title(
            f"nearest reader mark: slice {mark.slice_index}, centre row {mark.centre[0]:.0f}, col {mark.centre[1]:.0f}\n"
            f"{readers} reader outline(s) rated >= 3; candidate {p.nearest_mark_mm:.1f} mm away",
            fontsize=6,
        )
    hits = sum(p.hit for p in pointing)
    fig.suptitle(
        f"ct-chest, out of fold: best candidate (red marker as served, yellow +) vs reader marks rated >= 3\n"
        f"(cyan outline, x centre); pointing game {hits} of {len(pointing)} patients; {CROP_MM:.0f} mm views",
        fontsize=7,
    )
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def pointing_summary(pointing: list[PatientPointing]) -> dict[str, Any]:
    """``metrics.json`` ``pointing_game``: hits with the Wilson interval, and each patient's best candidate."""
    n = len(pointing)
    hits = sum(p.hit for p in pointing)
    low, high = wilson_interval(hits, n)
    return {
        "definition": "out-of-fold best candidate on a slice the readers contoured, inside a reader's outline of a nodule "
                      "rated >= 3 or within that outline's radius of its centre",
        "hits": hits, "n": n, "rate": hits / n if n else 0.0, "ci": [low, high], "goal": 0.8,
        "patients": [p.summary() for p in pointing],
    }


def figures_text(series: list[dict[str, Any]], threshold: float) -> str:
    """The card's Figures section, from ``metrics.json`` ``series_validation`` and the operating point."""
    recalled = sum(s["positive_marks_with_a_candidate"] for s in series)
    marks = sum(s["positive_marks"] for s in series)
    on_nodule = sum(s["top_candidate_on_nodule"] for s in series)
    above = sum(s["series_score"] >= threshold for s in series)
    rows = "".join(
        f"| {s['patient']} | {s['n_candidates']} | {s['positive_marks_with_a_candidate']} / {s['positive_marks']} | "
        f"{s['series_score']:.3f} | {'yes' if s['top_candidate_on_nodule'] else 'no'} | {s['rank_of_first_nodule_candidate']} |\n"
        for s in series
    )
    return (
        f"ROC with the operating point: `plots/roc_cross_validated.png`; best candidate against the reader marks, out "
        f"of fold: `plots/{LOCALISATION_FIGURE}` (pointing game under *Localisation*).\n\n"
        "Series, out-of-fold (each patient scored by the network that did not train on it):\n\n"
        "| patient | candidates | marks >= 3 with a candidate | series score | top candidate on a nodule | rank of first nodule candidate |\n"
        "|---|---|---|---|---|---|\n" + rows
        + f"\nCandidate recall {recalled} of {marks} positive marks (goal: >= 25 of 31 on LIDC-IDRI-0003). Top candidate "
        f"on a nodule (within one slice, and the mark's radius, at least 5 px, plus 4 px, of a mark rated >= 3): {on_nodule} of {len(series)} "
        f"patients. Series at or above the threshold: {above} of {len(series)}."
    )


def localisation_text(summary: dict[str, Any]) -> str:
    """The card's Localisation section, from ``metrics.json`` ``pointing_game``."""
    rows = "".join(
        f"| {p['patient']} | {p['fold'] + 1} | {p['slice_index']}, {p['row']}, {p['col']} | {p['score']:.3f} | "
        f"{'yes' if p['hit'] else 'no'} | {p['nearest_mark_mm'] if p['nearest_mark_mm'] is not None else '-'} |\n"
        for p in summary["patients"]
    )
    low, high = summary["ci"]
    return (
        "Served: the slice index, row and column of the highest-scoring candidate (and the top candidates with theirs); "
        "the heat-map image written back (and shown on the page) is that slice with a red disc at the candidate (radius "
        "half the candidate's diameter, at least 4 mm). The 8x8 `heatmap` inside each patch is also exported.\n\n"
        f"Candidates against reader marks, out of fold: `plots/{LOCALISATION_FIGURE}` (per patient, the best candidate's "
        "slice with the served marker, beside the nearest reader mark of a nodule rated >= 3 with every reader's outline "
        "and centre on that slice).\n\n"
        "Pointing game, cross-validated (each patient's candidates scored by the fold network that never saw the "
        "patient; a hit when the best candidate lies on a slice the readers contoured, inside a reader's outline of a "
        f"nodule rated >= 3 or within that outline's radius of its centre): **{summary['hits']} of {summary['n']} "
        f"patients** ({summary['rate']:.2f}, 95% Wilson interval {low:.2f}-{high:.2f}; goal 0.8): "
        "three patients, so the interval is wide and says little about new patients.\n\n"
        "| patient | fold | best candidate (slice, row, col) | score | hit | to the nearest mark centre (mm) |\n"
        "|---|---|---|---|---|---|\n" + rows.rstrip("\n")
    )


def redraw(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Redraw the figure from the shipped ``model.onnx`` and rewrite the card's Localisation section and
    ``metrics.json`` ``pointing_game`` exactly as training writes them."""
    from training.card_figures import run_ensemble

    model_dir = Path(model_dir)
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    fold_of = {patient: int(fold) for fold, patient in metrics["cross_validation"]["fold_patient"].items()}
    onnx_path = model_dir / "model.onnx"
    cases = lidc_cases(data_dir)
    volumes = {c.patient_id: c.volume() for c in cases}
    pointing: list[PatientPointing] = []
    marks: dict[str, list[ReaderMark]] = {}
    for case in sorted(cases, key=lambda c: fold_of[c.patient_id]):
        fold = fold_of[case.patient_id]
        marks[case.patient_id] = reader_marks(case, volumes[case.patient_id])

        def fold_score(x: np.ndarray, f: int = fold) -> np.ndarray:
            return run_ensemble(onnx_path, x, input_name="patches")[1][:, f]

        pointing.append(point_patient(case, volumes[case.patient_id], fold, fold_score))
    localisation_figure(volumes, marks, pointing, model_dir / "plots" / LOCALISATION_FIGURE)
    summary = pointing_summary(pointing)
    metrics["pointing_game"] = summary
    card_path = model_dir / "card.md"
    card = card_path.read_text()
    sections = {
        "Figures": figures_text(metrics["series_validation"], float(metrics["headline"]["threshold"])),
        "Localisation": localisation_text(summary),
    }
    for title, text in sections.items():
        found = re.search(rf"## {title}\n\n(.*?)\n## ", card, re.S)
        if found is None:
            raise ValueError(f"{card_path} has no {title} section")
        # training.publish.render_card writes a section as its text, a newline, and a blank line before the next.
        card = card[: found.start(1)] + text + "\n" + card[found.end(1) :]
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    card_path.write_text(card)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ct_figures", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the ct-chest bundle folder (model.onnx, metrics.json, card.md)")
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (holds ct/lidc)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = redraw(args.model_dir, args.data)
    except TrainingInputError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    for p in summary["patients"]:
        log.info("%s fold %d: best candidate slice %d row %d col %d score %.3f hit %s", p["patient"], p["fold"] + 1,
                 p["slice_index"], p["row"], p["col"], p["score"], p["hit"])
    log.info("pointing game %d of %d patients, 95%% CI %.2f-%.2f", summary["hits"], summary["n"], *summary["ci"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
