"""Mammography (mini-MIAS): suspicious finding vs normal film, patient-level 5-fold cross-validated.

The breast is segmented first (background, labels and markers zeroed: ``datasets.breast_mask``).
A patch detector learns from 64 px patches around the annotated findings and from breast tissue
(edges included, then the hardest false positives of its own first pass); being fully
convolutional it is swept over the whole 512 px film and the film score is the calibrated maximum
of its heat-map. Five fold networks, each never shown its held-out women, ship as one ensemble.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from datasets.mias import MiasFilm, read_film
from datasets.preprocess import PreprocessSpec, prepare_image
from datasets.splits import patient_folds
from service.steering import development_right
from training.cache import cached_arrays
from training.card_figures import DevelopmentSet
from training.task_data import mias_films

__all__ = ["train", "development_set", "pointing_game", "SPEC", "sample_patches", "FOLDS"]

log = logging.getLogger(__name__)

TASK = "mammography"
SPEC = PreprocessSpec(size=(512, 512), window=None, percentiles=(0.5, 99.5), extra={"mask": "breast"})
SCALE = 512 / 1024
PATCH = 64
POSITIVE_PER_FINDING = 8
NEGATIVE_PER_FILM = 10
HARD_NEGATIVE_PER_FILM = 4
FOLDS = 5
# Screening triage must not miss: the operating point keeps 0.90 of abnormal films above it.
MIN_SENSITIVITY = 0.90
MAMMOGRAPHY_RAISE_FLOOR = 0.85  # the goal on new women; below it the model is shadow
CELL = 16  # heat-map cell of the 512 px film


def _films(films: list[MiasFilm], cache_dir: Path | None) -> np.ndarray:
    def build() -> dict[str, np.ndarray]:
        return {"x": np.stack([prepare_image(read_film(f), SPEC)[0] for f in films]).astype(np.float16)}

    return cached_arrays(cache_dir, {"name": "mias", "files": [str(f.path) for f in films], "spec": SPEC.to_dict(), "v": 2}, build)["x"]


def development_set(data_dir: Path, cache_dir: Path | None, limit: int | None = None, seed: int = 0) -> DevelopmentSet:
    """All MIAS films (breast-masked, 512 px): suspicious vs normal, one group per woman."""
    films = _select(mias_films(data_dir), limit, seed)
    labels = np.array([f.suspicious for f in films])
    malignant = np.array([f.malignant for f in films])
    subsets = {
        "malignant_vs_normal": ("Films with a malignant finding vs normal films (out-of-fold)", (malignant == 1) | (labels == 0)),
        "benign_vs_normal": ("Films with benign findings only vs normal films (out-of-fold)", ((labels == 1) & (malignant == 0)) | (labels == 0)),
    }
    subsets = {k: v for k, v in subsets.items() if len(set(labels[v[1]].tolist())) == 2}
    return DevelopmentSet(_films(films, cache_dir), labels, np.array([f.patient_id for f in films]), subsets)


def _select(films: list[MiasFilm], limit: int | None, seed: int) -> list[MiasFilm]:
    if not limit:
        return films
    rng = np.random.default_rng(seed)
    patients = sorted({f.patient_id for f in films})
    keep = set(rng.choice(patients, min(limit, len(patients)), replace=False).tolist())
    return [f for f in films if f.patient_id in keep]


def _lesions(film: MiasFilm) -> list[tuple[float, float, float]]:
    """(row, col, radius) of each finding with a centre, in 512 px film coordinates."""
    return [(f.row * SCALE, f.col * SCALE, (f.radius or 0) * SCALE) for f in film.findings if f.row is not None and f.col is not None]


def pointing_game(films: list[MiasFilm], heatmaps: np.ndarray) -> tuple[int, int]:
    """(hits, films): the heat-map's peak cell centre lies inside an annotated lesion (radius at least one cell)."""
    hits = total = 0
    for film, heatmap in zip(films, heatmaps, strict=True):
        lesions = _lesions(film)
        if not lesions:
            continue
        total += 1
        row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        r, c = (row + 0.5) * CELL, (col + 0.5) * CELL
        hits += any(np.hypot(r - lr, c - lc) <= max(radius, CELL) for lr, lc, radius in lesions)
    return hits, total


def _crop(film: np.ndarray, row: int, col: int) -> np.ndarray:
    half = PATCH // 2
    padded = np.pad(film, ((0, 0), (half, half), (half, half)))
    return padded[:, row : row + PATCH, col : col + PATCH]


def sample_patches(films: list[MiasFilm], arrays: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches [N, 1, 64, 64] with labels [N, 2] (suspicious, malignant), seeded.

    Positives are jittered around each finding's centre (inside its radius); negatives are centred
    anywhere in the breast (``image > 0`` after masking: the skin line and the mask edge included, so
    they stop being false positives) away from every finding. Films whose finding has no centre
    (diffuse calcifications) give no patches: their tissue is not a safe negative.
    """
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    size = arrays.shape[-1]
    for film, image in zip(films, arrays, strict=True):
        centres = [(f.row * SCALE, f.col * SCALE, (f.radius or 0) * SCALE, f.severity) for f in film.findings if f.row is not None and f.col is not None]
        inside = np.argwhere(image[0] > 0)
        if film.findings and not centres:
            continue
        for row, col, radius, severity in centres:
            jitter = max(2.0, min(radius * 0.5, 16.0))
            for _ in range(POSITIVE_PER_FINDING):
                r = int(np.clip(row + rng.uniform(-jitter, jitter), 0, size - 1))
                c = int(np.clip(col + rng.uniform(-jitter, jitter), 0, size - 1))
                patches.append(_crop(image, r, c))
                labels.append((1, int(severity == "M")))
        taken = tries = 0
        while taken < NEGATIVE_PER_FILM and tries < 400:
            tries += 1
            if not len(inside):
                break
            r, c = (int(v) for v in inside[rng.integers(0, len(inside))])
            if any(np.hypot(r - row, c - col) < radius + PATCH / 2 for row, col, radius, _ in centres):
                continue
            patch = _crop(image, r, c)
            patches.append(patch)
            labels.append((0, 0))
            taken += 1
    return np.stack(patches).astype(np.float16), np.asarray(labels, dtype=np.float32)


def hard_negatives(films: list[MiasFilm], arrays: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Patches at the hottest heat-map cells away from every finding: the detector's own false positives."""
    patches = []
    for film, image, heatmap in zip(films, arrays, heatmaps, strict=True):
        lesions = _lesions(film)
        if film.findings and not lesions:
            continue
        taken = 0
        for flat in np.argsort(-heatmap.ravel()):
            row, col = np.unravel_index(int(flat), heatmap.shape)
            r, c = int((row + 0.5) * CELL), int((col + 0.5) * CELL)
            if image[0, r, c] <= 0 or any(np.hypot(r - lr, c - lc) < radius + PATCH / 2 for lr, lc, radius in lesions):
                continue
            patches.append(_crop(image, r, c))
            taken += 1
            if taken == HARD_NEGATIVE_PER_FILM:
                break
    return np.stack(patches).astype(np.float16) if patches else np.zeros((0, 1, PATCH, PATCH), np.float16)


def train(
    data_dir: Path, out_dir: Path, tracking_uri: str, *, epochs: int, seed: int, limit: int | None, cache_dir: Path | None, folds: int = FOLDS
) -> dict[str, Any]:
    import tempfile

    import torch

    from models.networks import FoldEnsemble, build_network
    from quality.statistics import wilson_interval
    from training.augment import build_augmentation
    from training.card_figures import figures_from_scores, headline_of, run_ensemble
    from training.crossval import cross_validate, fit_platt
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.export import export_onnx
    from training.metrics import evaluate_binary
    from training.publish import Evaluation, TaskReport, training_run, write_bundle

    seed_everything(seed)
    films = _select(mias_films(data_dir), limit, seed)
    dev = development_set(data_dir, cache_dir, limit, seed)
    arrays, labels = dev.x, dev.labels
    malignant = np.array([f.malignant for f in films])
    fold_of = patient_folds(list(dev.groups), list(labels), folds, seed)
    mining_from = max(1, epochs * 2 // 3)
    params = {
        "task": TASK, "epochs": epochs, "seed": seed, "limit": limit, "lr": 2e-3, "folds": folds,
        "data": str(Path(data_dir).resolve()),  # which copy of the data, as a retrain records its export
        "film_size": list(SPEC.size), "patch_size": PATCH, "patch_batch": 64, "hard_negative_round_after_epoch": mining_from,
        "n_films": len(films), "n_women": len(set(dev.groups.tolist())), "torch_threads": torch.get_num_threads(),
        "architecture": f"FoldEnsemble of {folds} x HeatmapClassifier(1->2, channels 16-32-48-64, max pooling, stem stride 2)",
    }
    oof_maps = np.zeros((len(films), 32, 32), np.float32)

    def heatmaps(network: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        network.eval()
        with torch.no_grad():
            return np.concatenate([network(torch.from_numpy(x[i : i + 4].astype(np.float32)))[1][:, 0].numpy() for i in range(0, len(x), 4)])

    def train_fold(fold: int, train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[torch.nn.Module, list[dict[str, float]]]:
        seed_everything(seed + fold)
        train_films = [films[i] for i in train_idx]
        x_p, y_p = sample_patches(train_films, arrays[train_idx], seed + fold)
        network = build_network(TASK)
        common: dict[str, Any] = {"seed": seed + fold, "transform": build_augmentation(TASK, seed + fold), "validate": lambda m: {},
                  "pos_weight": [2.0, 4.0], "select_best": False}
        first = fit(network, [ArraySet(x_p, y_p, batch_size=64)], epochs=mining_from, lr=2e-3, desc=f"{TASK} fold {fold + 1}/{folds}", **common)
        # Second pass: add the detector's own hottest false positives on its training films.
        x_hard = hard_negatives(train_films, arrays[train_idx], heatmaps(network, arrays[train_idx]))
        y_hard = np.zeros((len(x_hard), 2), np.float32)
        second = fit(network, [ArraySet(np.concatenate([x_p, x_hard]), np.concatenate([y_p, y_hard]), batch_size=64)],
                     epochs=max(1, epochs - mining_from), lr=5e-4, desc=f"{TASK} fold {fold + 1}/{folds} hard", **common)
        oof_maps[test_idx] = heatmaps(network, arrays[test_idx])
        history = [{**h, "stage": 1.0, "n_patches": float(len(x_p))} for h in first.history]
        history += [{**h, "stage": 2.0, "n_hard_negatives": float(len(x_hard))} for h in second.history]
        return network, history

    with training_run(tracking_uri, TASK, params) as run:
        cv = cross_validate(fold_of, train_fold, lambda net, idx: predict(net, arrays[idx], batch_size=4, logits=True))
        platt = [fit_platt(cv.oof_logits[:, 0], labels), fit_platt(cv.oof_logits[:, 1], malignant)]
        ensemble = FoldEnsemble(cv.networks, [p[0] for p in platt], [p[1] for p in platt], score="fold_mean").eval()
        params.update(platt=platt, cv_wall_seconds=round(cv.wall_seconds), cv_cpu_seconds=round(cv.cpu_seconds))
        hits, pointed = pointing_game(films, oof_maps)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(ensemble, torch.from_numpy(arrays[:1].astype(np.float32)), Path(tmp) / "model.onnx", input_name="image", output_names=["score", "heatmap", "fold_scores"])
            scores, fold_scores = run_ensemble(onnx_path, arrays, input_name="image", batch_size=4)
            _, fold_malignant = run_ensemble(onnx_path, arrays, input_name="image", score_index=1, batch_size=4)
        figures = figures_from_scores(dev, scores, fold_scores, k=folds, seed=seed, min_sensitivity=MIN_SENSITIVITY)
        oof_malignant = fold_malignant[np.arange(len(films)), figures.folds]
        malignant_metrics = evaluate_binary(malignant, oof_malignant, min_sensitivity=MIN_SENSITIVITY, seed=seed, groups=dev.groups)
        evaluations = [
            Evaluation("cross_validated", f"MIAS films, {folds}-fold cross-validation over women (out-of-fold): suspicious finding vs normal", labels, figures.oof_scores, figures.cross_validated),
            Evaluation("apparent", "Shipped ensemble on all development films (training data included: optimistic)", labels, scores, figures.apparent),
            Evaluation("malignant", "Out-of-fold `score[:, 1]`: malignant finding vs the rest", malignant, oof_malignant, malignant_metrics),
        ]
        for name, (title, metrics) in figures.subsets.items():
            mask = dev.subsets[name][1]
            evaluations.append(Evaluation(name, title, labels[mask], figures.oof_scores[mask], metrics))
        pointing = {"hits": hits, "films": pointed, "rate": hits / max(pointed, 1), "ci": list(wilson_interval(hits, pointed))}
        _plot_heatmaps(films, arrays, oof_maps, out_dir)
        history = [{"fold": r.fold, **h} for r in cv.results for h in r.history]
        plan = {"k": folds, "seed": seed, "min_sensitivity": MIN_SENSITIVITY, "fold_output": "fold_scores", "batch_size": 4,
                "data": "mammography/mias (all 170 films)" if not limit else f"limit {limit} women",
                "fold_wall_seconds": [round(r.wall_seconds) for r in cv.results], "fold_cpu_seconds": [round(r.cpu_seconds) for r in cv.results]}
        report = TaskReport(
            task=TASK,
            export_module=ensemble,
            parity_inputs=arrays[:4].astype(np.float32),
            input_name="image",
            input_shape=[-1, 1, *SPEC.size],
            outputs=[
                {"name": "score", "shape": [-1, 2], "meaning": "calibrated probabilities [suspicious finding, malignant finding]: mean of the fold networks' calibrated scores"},
                {"name": "heatmap", "shape": [-1, 2, 32, 32], "meaning": "per-region calibrated probabilities, 16 px cells of the 512 px film (6.4 mm); zero input outside the breast"},
                {"name": "fold_scores", "shape": [-1, 2, folds], "meaning": "each cross-validation fold network's calibrated scores (reproduces the card's out-of-fold figures)"},
            ],
            preprocess={**SPEC.to_dict(), "function": "datasets.preprocess.prepare_image", "modalities": ["MG"], "pixel_mm": 0.4},
            headline=evaluations[0],
            evaluations=evaluations,
            card=_card_text(params, figures, malignant_metrics, pointing, epochs),
            params=params,
            history=history,
            bundle_extra={
                "score_output": "score",
                "score_index": 0,
                "malignant_index": 1,
                "malignant_threshold": malignant_metrics.threshold,
                "localisation": {"kind": "heatmap", "output": "heatmap"},
                # Screening mammography asks more than the general floor: its goal (AUROC 0.85) is the floor.
                "steering": development_right(
                    figures.cross_validated.auroc_ci_low, figures.cross_validated.n, figures.cross_validated.n_positive,
                    floor=MAMMOGRAPHY_RAISE_FLOOR,
                    validated_on=f"{figures.cross_validated.n} films of one archive, cross-validated by woman",
                ),
            },
            extra_metrics={"headline": headline_of(figures), "cross_validation": plan, "pointing_game": pointing},
        )
        written = write_bundle(report, out_dir, run)
        if not limit:
            # The served heat-map is chosen, and its pointing game measured, from the file just written
            # (its fold networks out of fold), as `python -m training.mammography_figures` does.
            import mlflow

            from training.mammography_figures import pointing_figures, update_bundle

            update_bundle(out_dir, pointing_figures(out_dir, data_dir))
            for name in ("card.md", "metrics.json", "bundle.json"):
                mlflow.log_artifact(str(Path(out_dir) / name))
            mlflow.log_artifact(str(Path(out_dir) / "plots" / "heatmaps_out_of_fold.png"), artifact_path="plots")
        return written


def _plot_heatmaps(films: list[MiasFilm], arrays: np.ndarray, heatmaps: np.ndarray, out_dir: Path) -> None:
    """Out-of-fold heat-maps on the first six films with a located finding, the lesion circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [i for i, f in enumerate(films) if _lesions(f)][:6]
    if not chosen:
        return
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.2 * len(chosen), 2.6), dpi=100)
    for ax, i in zip(np.atleast_1d(axes), chosen, strict=True):
        ax.imshow(arrays[i, 0].astype(np.float32), cmap="gray")
        ax.imshow(np.kron(heatmaps[i], np.ones((CELL, CELL))), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for r, c, radius in _lesions(films[i]):
            ax.add_patch(plt.Circle((c, r), max(radius, CELL), fill=False, color="white", lw=1))
        ax.set_title(films[i].refnum, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    (Path(out_dir) / "plots").mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out_dir) / "plots" / "heatmaps_out_of_fold.png")
    plt.close(fig)


def _card_text(params: dict[str, Any], figures: Any, malignant: Any, pointing: dict[str, Any], epochs: int) -> dict[str, str]:
    from training.publish import limit_option

    cv, apparent = figures.cross_validated, figures.apparent
    k = params["folds"]
    goal_met = cv.auroc_ci_low >= MAMMOGRAPHY_RAISE_FLOOR
    subsets = "".join(
        f"- {title}: AUROC {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f}), sensitivity {m.sensitivity:.3f}\n"
        for title, m in figures.subsets.values()
    )
    return {
        "intended_use": (
            "Research-grade aid for screening mammograms (MG, one view at a time): a suspicious-finding probability "
            "(mass, calcification, distortion, asymmetry; benign or malignant), a separate malignant-finding "
            "probability and a heat-map of where. Not a CAD device and not a diagnosis."
        ),
        "steering": (
            ("**`raise-only`**. The cross-validated AUROC's lower bound reaches the goal (0.85), but one 1990s film "
             "archive cannot show transfer to digital mammography: the model may raise a study, never lower one.")
            if goal_met
            else (
                f"**`shadow`**. The goal (AUROC >= 0.85 on new women) is not met: cross-validated AUROC {cv.auroc:.3f} "
                f"(95% CI {cv.auroc_ci_low:.3f}-{cv.auroc_ci_high:.3f}). The model's scores are recorded for "
                "monitoring and must not change any study's priority or be shown as a finding."
            )
        ),
        "data": (
            "Mammographic Image Analysis Society mini-MIAS database (Suckling et al. 1994), research use only "
            "(MIAS `Licence.txt`): 170 films of this development subset (108 normal, 33 benign, 29 malignant) from "
            "85 women, 1024x1024 at 200 um, with `Info.txt` centre and radius of each finding."
        ),
        "split": (
            f"Patient-level {k}-fold cross-validation over {'the' if params['limit'] else 'all'} {params['n_films']} films ({params['n_women']} women; "
            "left and right films of one woman are consecutive numbers and stay in one fold), stratified by the "
            f"woman's label, seeded (`datasets.splits.patient_folds`, seed {params['seed']}). No held-out film "
            "chooses weights (every fold keeps its last epoch); the operating point is chosen on out-of-fold scores."
        ),
        "model": (
            f"`models.networks.FoldEnsemble` of {k} fully convolutional MONAI residual CNNs (`HeatmapClassifier`, "
            "2-channel logit map, max pooling). Input: the whole film at 512 px (0.4 mm pixels), percentile rescale, "
            "then the breast mask (`datasets.breast_mask`: largest bright component, holes filled; labels, markers "
            f"and background zeroed). Each fold network trains {params['hard_negative_round_after_epoch']} epochs on "
            f"64 px patches ({POSITIVE_PER_FINDING} jittered per finding, {NEGATIVE_PER_FILM} per film anywhere in the "
            f"breast, skin line included), then {epochs - params['hard_negative_round_after_epoch']} more with "
            f"{HARD_NEGATIVE_PER_FILM} hard negatives per training film (its own hottest false-positive cells). Each "
            "fold network's film score is the maximum of its logit map, Platt-calibrated on out-of-fold film logits; "
            "the shipped `score` is the mean of the calibrated fold scores (the distribution the operating point was "
            "chosen on). AdamW, "
            f"MONAI flips/affine/contrast augmentation. Training: {params['cv_wall_seconds']} s wall, "
            f"{params['cv_cpu_seconds']} s CPU on a shared 2-core machine ({params['torch_threads']} torch thread)."
        ),
        "metrics_note": (
            "**Cross-validated (out-of-fold)** figures are the estimate for new women; **apparent** figures are the "
            "shipped ensemble on the same films, training films included (optimistic, shown so the file can be "
            "checked). The headline is recomputed from `model.onnx` by `tests/training/test_card_figures.py`."
        ),
        "intervals": "95% intervals: AUROC by 2,000 bootstrap resamples of women; sensitivity and specificity by the Wilson interval over films.",
        "figures": (
            "ROC with the operating point: `plots/roc_cross_validated.png`; out-of-fold heat-maps with the annotated "
            "lesion circled: `plots/heatmaps_out_of_fold.png`.\n\n" + subsets
            + f"\nPointing game (out-of-fold: the heat-map's peak cell inside the annotated lesion, radius at least one "
            f"6.4 mm cell) on the {pointing['films']} abnormal films with a centre: {pointing['hits']} hits, "
            f"{pointing['rate']:.2f} (95% CI {pointing['ci'][0]:.2f}-{pointing['ci'][1]:.2f}); goal 0.6. Computed by "
            "the fold networks during training (they are inside `model.onnx`), not yet recomputed by the test."
        ),
        "operating_point": (
            f"`threshold` {cv.threshold:.3f} on `score[:, 0]`: the highest threshold with out-of-fold film sensitivity >= "
            f"{MIN_SENSITIVITY:.2f} (sensitivity {cv.sensitivity:.3f}, specificity {cv.specificity:.3f}; apparent "
            f"{apparent.sensitivity:.3f} / {apparent.specificity:.3f}). `malignant_threshold` {malignant.threshold:.3f} on "
            f"`score[:, 1]`, chosen the same way (out-of-fold malignant AUROC {malignant.auroc:.3f}, "
            f"{malignant.auroc_ci_low:.3f}-{malignant.auroc_ci_high:.3f})."
        ),
        "localisation": "`heatmap` (2x32x32): per-cell calibrated probabilities of the ensemble's mean logit map; each cell is 16x16 px of the 512 px film (6.4 mm). Its peak shows where the networks agree most; the score is the mean of the fold networks' own maxima, so the peak value runs lower than the score.",
        "limitations": (
            "- The shipped `score` is the mean of the fold networks' calibrated scores, so the threshold chosen on "
            f"out-of-fold scores keeps its meaning: at it the shipped file flags {apparent.sensitivity:.2f} of the "
            f"abnormal development films (apparent, training films included) against {cv.sensitivity:.2f} out of fold.\n"
            "- 0.4 mm pixels erase most microcalcifications; calcification findings are unlikely to be found.\n"
            "- The network sees the pectoral muscle (its input mask keeps it; only the served heat-map removes it, see "
            "Localisation); the two views of a woman are scored "
            "independently: no asymmetry comparison, no priors. Hand-feature methods with both (pectoral removal, "
            "left-right differences, blob candidates; `python -m training.mammography_candidates`, README) were "
            "cross-validated on the same folds and did not beat this model beyond noise, so none ships.\n"
            "- Digitised film from one 1990s UK programme; modern digital mammograms (DICOM MG, FFDM processing) "
            "differ in contrast and noise; cross-validation within MIAS does not measure that shift.\n"
            "- Benign and malignant labels per finding are those of MIAS; there is no BI-RADS."
        ),
        "reproduce": (
            f"medscreen train mammography --data ../shared/data --epochs {epochs} --folds {k} --seed {params['seed']}"
            f"{limit_option(params)} --threads 1 --out models/mammography\n"
            "PYTHONPATH=$PWD python -m pytest tests/training/test_card_figures.py -k mammography"
        ),
    }
