"""Mammography (mini-MIAS): suspicious finding vs normal, and malignant vs the rest.

With 170 films the network learns from 64 px patches around the annotated findings and from
normal tissue, and from whole films at the same scale (multiple-instance: the film label on the
max of the heat-map). Being fully convolutional, the same weights score a patch or a film; both
are reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from datasets.mias import MiasFilm, load_mias, read_film
from datasets.preprocess import PreprocessSpec, prepare_image
from datasets.splits import patient_split
from training.cache import cached_arrays

__all__ = ["train", "SPEC", "sample_patches"]

log = logging.getLogger(__name__)

TASK = "mammography"
SPEC = PreprocessSpec(size=(512, 512), window=None, percentiles=(0.5, 99.5))
SCALE = 512 / 1024
PATCH = 64
POSITIVE_PER_FINDING = 8
NEGATIVE_PER_FILM = 10


def _films(films: list[MiasFilm], cache_dir: Path | None) -> np.ndarray:
    def build() -> dict[str, np.ndarray]:
        return {"x": np.stack([prepare_image(read_film(f), SPEC)[0] for f in films]).astype(np.float16)}

    return cached_arrays(cache_dir, {"name": "mias", "files": [str(f.path) for f in films], "spec": SPEC.to_dict(), "v": 1}, build)["x"]


def _crop(film: np.ndarray, row: int, col: int) -> np.ndarray:
    half = PATCH // 2
    padded = np.pad(film, ((0, 0), (half, half), (half, half)))
    return padded[:, row : row + PATCH, col : col + PATCH]


def sample_patches(films: list[MiasFilm], arrays: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches [N, 1, 64, 64] with labels [N, 2] (suspicious, malignant), seeded.

    Positives are jittered around each finding's centre (inside its radius); negatives are breast
    tissue (mean intensity > 0.15, which skips the black background) away from every finding. Films
    whose finding has no centre (diffuse calcifications) give no patches: their tissue is not a safe negative.
    """
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    size = arrays.shape[-1]
    for film, image in zip(films, arrays, strict=True):
        centres = [(f.row * SCALE, f.col * SCALE, (f.radius or 0) * SCALE, f.severity) for f in film.findings if f.row is not None]
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
            r, c = (int(v) for v in rng.integers(PATCH // 2, size - PATCH // 2, 2))
            if any(np.hypot(r - row, c - col) < radius + PATCH / 2 for row, col, radius, _ in centres):
                continue
            patch = _crop(image, r, c)
            if float(patch.astype(np.float32).mean()) < 0.15:
                continue
            patches.append(patch)
            labels.append((0, 0))
            taken += 1
    return np.stack(patches).astype(np.float16), np.asarray(labels, dtype=np.float32)


def train(data_dir: Path, out_dir: Path, tracking_uri: str, *, epochs: int, seed: int, limit: int | None, cache_dir: Path | None) -> dict[str, Any]:
    import mlflow
    import torch
    from sklearn.metrics import roc_auc_score

    from models.networks import ScoreAndHeatmap, build_network
    from training.augment import build_augmentation
    from training.engine import ArraySet, fit, predict, seed_everything
    from training.metrics import evaluate_binary
    from training.publish import Evaluation, TaskReport, training_run, write_bundle

    seed_everything(seed)
    films = load_mias(Path(data_dir) / "mammography" / "mias")
    if limit:
        rng = np.random.default_rng(seed)
        normal = [f for f in films if not f.suspicious]
        abnormal = [f for f in films if f.suspicious and any(x.row is not None for x in f.findings)]
        films = sorted(
            [normal[i] for i in rng.choice(len(normal), min(limit, len(normal)), replace=False)]
            + [abnormal[i] for i in rng.choice(len(abnormal), min(limit, len(abnormal)), replace=False)],
            key=lambda f: f.refnum,
        )
    arrays = _films(films, cache_dir)
    y_film = np.array([[f.suspicious, f.malignant] for f in films], dtype=np.float32)
    train_idx, val_idx = patient_split([f.patient_id for f in films], y_film[:, 0].astype(int), 0.2, seed)
    train_films, val_films = [films[i] for i in train_idx], [films[i] for i in val_idx]
    x_tp, y_tp = sample_patches(train_films, arrays[train_idx], seed)
    x_vp, y_vp = sample_patches(val_films, arrays[val_idx], seed + 1)
    x_vf, y_vf = arrays[val_idx], y_film[val_idx]
    params = {
        "task": TASK, "epochs": epochs, "seed": seed, "limit": limit, "lr": 2e-3,
        "film_size": list(SPEC.size), "patch_size": PATCH, "patch_batch": 64, "film_batch": 4,
        "n_train_films": len(train_idx), "n_val_films": len(val_idx),
        "n_train_patients": len({f.patient_id for f in train_films}), "n_val_patients": len({f.patient_id for f in val_films}),
        "n_train_patches": len(x_tp), "n_val_patches": len(x_vp),
        "architecture": "HeatmapClassifier(1->2, channels 16-32-48-64, max pooling, stem stride 2)",
    }
    network = build_network(TASK)
    params["parameters"] = sum(p.numel() for p in network.parameters())

    def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
        return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) > 1 else 0.5

    def validate(model: torch.nn.Module) -> dict[str, float]:
        patch_scores = predict(model, x_vp)
        film_scores = predict(model, x_vf, batch_size=4)
        metrics = {
            "val_patch_auroc": auroc(y_vp[:, 0], patch_scores[:, 0]),
            "val_patch_malignant_auroc": auroc(y_vp[:, 1], patch_scores[:, 1]),
            "val_film_auroc": auroc(y_vf[:, 0], film_scores[:, 0]),
            "val_film_malignant_auroc": auroc(y_vf[:, 1], film_scores[:, 1]),
        }
        # 34 validation films make the film AUROC alone a noisy selector; the patch AUROC steadies it.
        metrics["val_selection"] = (metrics["val_patch_auroc"] + metrics["val_film_auroc"]) / 2
        return metrics

    film_from = epochs // 2
    params["films_from_epoch"] = film_from + 1
    train_sets = [
        ArraySet(x_tp, y_tp, batch_size=64),
        ArraySet(arrays[train_idx], y_film[train_idx], batch_size=4, from_epoch=film_from),
    ]
    with training_run(tracking_uri, TASK, params) as run:
        result = fit(
            network, train_sets, epochs=epochs, lr=2e-3, seed=seed, transform=build_augmentation(TASK, seed),
            validate=validate, pos_weight=[1.0, 2.0], selection_metric="val_selection",
            on_epoch=lambda e, m: mlflow.log_metrics(m, step=e), desc=TASK,
        )
        mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        film_scores = predict(network, x_vf, batch_size=4)
        patch_scores = predict(network, x_vp)
        film = Evaluation("film_suspicious", "Whole films: suspicious finding vs normal", y_vf[:, 0], film_scores[:, 0],
                          evaluate_binary(y_vf[:, 0], film_scores[:, 0], seed=seed))
        film_malignant = Evaluation("film_malignant", "Whole films: malignant vs the rest", y_vf[:, 1], film_scores[:, 1],
                                    evaluate_binary(y_vf[:, 1], film_scores[:, 1], seed=seed))
        patch = Evaluation("patch_suspicious", "64 px patches: finding vs normal tissue", y_vp[:, 0], patch_scores[:, 0],
                           evaluate_binary(y_vp[:, 0], patch_scores[:, 0], seed=seed))
        patch_malignant = Evaluation("patch_malignant", "64 px patches: malignant finding vs the rest", y_vp[:, 1], patch_scores[:, 1],
                                     evaluate_binary(y_vp[:, 1], patch_scores[:, 1], seed=seed))
        evaluations = [film, film_malignant, patch, patch_malignant]
        report = TaskReport(
            task=TASK,
            export_module=ScoreAndHeatmap(network).eval(),
            parity_inputs=x_vf[:4].astype(np.float32),
            input_name="image",
            input_shape=[-1, 1, *SPEC.size],
            outputs=[
                {"name": "score", "shape": [-1, 2], "meaning": "probabilities: [suspicious finding, malignant finding] (max over the heat-map)"},
                {"name": "heatmap", "shape": [-1, 2, 32, 32], "meaning": "per-region probabilities, 16 px cells of the 512 px film (6.4 mm)"},
            ],
            preprocess={**SPEC.to_dict(), "function": "datasets.preprocess.prepare_image", "modalities": ["MG"], "pixel_mm": 0.4},
            headline=film,
            evaluations=evaluations,
            card=_card_text(params, evaluations, result.best_epoch + 1, epochs),
            params=params,
            history=result.history,
            bundle_extra={
                "score_output": "score",
                "score_index": 0,
                "malignant_index": 1,
                "malignant_threshold": film_malignant.metrics.threshold,
                "localisation": {"kind": "heatmap", "output": "heatmap"},
            },
        )
        metrics = write_bundle(report, out_dir, run)
    return metrics


def _card_text(params: dict[str, Any], evaluations: list[Any], best_epoch: int, epochs: int) -> dict[str, str]:
    film, film_malignant, patch, _ = evaluations
    return {
        "intended_use": (
            "Research-grade triage aid for screening mammograms (MG, one view at a time): flags films with a "
            "suspicious finding (mass, calcification, distortion, asymmetry; benign or malignant) and gives a "
            "separate malignant-finding probability, with a heat-map of where. Not a CAD device: its film-level "
            "accuracy (below) is far from what screening needs, and it must not lower a film's priority on its own."
        ),
        "data": (
            "Mammographic Image Analysis Society mini-MIAS database (Suckling et al. 1994), research use only "
            "(MIAS `Licence.txt`): 170 films of this development subset (108 normal, 33 benign, 29 malignant), "
            "1024x1024 at 200 um, with `Info.txt` centre and radius of each finding."
        ),
        "split": (
            f"Patient-level (left/right films of one woman are consecutive numbers), stratified, seeded: "
            f"train {params['n_train_films']} films ({params['n_train_patients']} women), validation "
            f"{params['n_val_films']} films ({params['n_val_patients']} women). Patches: {params['n_train_patches']} "
            f"train / {params['n_val_patches']} validation, {POSITIVE_PER_FINDING} jittered per finding and "
            f"{NEGATIVE_PER_FILM} normal-tissue patches per film. Weights of the epoch with the best mean of patch and "
            f"film validation AUROC (epoch {best_epoch} of {epochs})."
        ),
        "model": (
            f"MONAI residual CNN (`models.networks.HeatmapClassifier`, {params['parameters']:,} parameters), fully "
            "convolutional with max pooling of a 2-channel logit map. Trained on 64 px patches, joined from epoch "
            f"{params['films_from_epoch']} by whole 512 px films (0.4 mm pixels, percentile rescale), interleaved batch by batch, AdamW one-cycle LR 2e-3, MONAI flips/affine/"
            f"contrast augmentation, seed {params['seed']}. The ONNX model takes the whole film."
        ),
        "operating_point": (
            f"`threshold` {film.metrics.threshold:.3f} on `score[:, 0]` (suspicious): the highest threshold with "
            f"validation film sensitivity >= 0.90 (sensitivity {film.metrics.sensitivity:.3f}, specificity "
            f"{film.metrics.specificity:.3f}). `malignant_threshold` {film_malignant.metrics.threshold:.3f} on "
            "`score[:, 1]`, chosen the same way. Both are chosen on the validation films they are reported on."
        ),
        "localisation": "`heatmap` (2x32x32): per-cell probabilities before max pooling; each cell is 16x16 px of the 512 px film (6.4 mm).",
        "limitations": (
            f"- Shortfall: whole-film AUROC is {film.metrics.auroc:.3f} (95% CI {film.metrics.auroc_ci_low:.3f}-"
            f"{film.metrics.auroc_ci_high:.3f}) against {patch.metrics.auroc:.3f} on patches: finding a lesion in a "
            "whole film from ~130 training films is much harder than classifying a patch centred on it; the CI is "
            f"wide because only {film.metrics.n} films ({film.metrics.n_positive} abnormal) are held out.\n"
            "- 0.4 mm pixels erase most microcalcifications, so calcification findings are unlikely to be found; the "
            "validation set is too small to measure this per finding type.\n"
            "- Digitised film from one 1990s UK programme; modern digital mammograms (DICOM MG, FFDM processing) "
            "differ in contrast and noise; the percentile rescale narrows but does not remove that gap.\n"
            "- Each view is scored alone; no comparison with the other breast or prior studies.\n"
            "- Benign and malignant labels per finding are those of MIAS; there is no BI-RADS."
        ),
        "reproduce": f"medscreen train mammography --data ../shared/data --epochs {epochs} --seed {params['seed']} --out models/mammography",
    }
