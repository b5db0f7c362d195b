"""Cross-validation machinery: patient-level folds, patient bootstrap, calibration, the fold ensemble."""

from __future__ import annotations

import numpy as np
import torch

from datasets.splits import patient_folds
from models.networks import FoldEnsemble, HeatmapClassifier
from training.augment import AcquisitionShift, jpeg_roundtrip
from training.card_figures import DevelopmentSet, figures_from_scores
from training.crossval import cross_validate, fit_platt
from training.metrics import bootstrap_auroc


def _patients(n: int = 60) -> tuple[list[str], list[int]]:
    ids = [f"p{i // 2}" for i in range(n)]  # two images per patient
    labels = [int(i // 2 % 3 == 0) for i in range(n)]
    return ids, labels


def test_folds_keep_patients_whole_balance_classes_and_are_seeded() -> None:
    ids, labels = _patients()
    folds = patient_folds(ids, labels, 5, seed=1)
    for pid in set(ids):
        assert len({folds[i] for i, p in enumerate(ids) if p == pid}) == 1
    positives = np.bincount(folds[np.array(labels) == 1], minlength=5)
    assert positives.max() - positives.min() <= 2 and set(folds.tolist()) == set(range(5))
    assert np.array_equal(folds, patient_folds(ids, labels, 5, seed=1))
    assert not np.array_equal(folds, patient_folds(ids, labels, 5, seed=2))


def test_patient_bootstrap_is_wider_than_item_bootstrap_when_images_repeat() -> None:
    rng = np.random.default_rng(0)
    patient_label = rng.integers(0, 2, 40)
    patient_score = patient_label * 0.4 + rng.random(40)
    # Ten identical images per patient: resampling images pretends there are 400 observations.
    labels, scores, groups = np.repeat(patient_label, 10), np.repeat(patient_score, 10), np.repeat(np.arange(40), 10)
    item_low, item_high = bootstrap_auroc(labels, scores, n_boot=400)
    low, high = bootstrap_auroc(labels, scores, n_boot=400, groups=groups)
    assert (high - low) > 1.8 * (item_high - item_low)


def test_out_of_fold_scores_come_from_the_network_that_did_not_see_the_patient() -> None:
    ids, labels = _patients(20)
    folds = patient_folds(ids, labels, 2, seed=0)
    trained_on: dict[int, set[int]] = {}

    def train_fold(fold: int, train_idx: np.ndarray, test_idx: np.ndarray) -> tuple[int, list]:
        trained_on[fold] = set(train_idx.tolist())
        return fold, []

    cv = cross_validate(folds, train_fold, lambda net, idx: np.full((len(idx), 1), float(net)))
    for i in range(len(ids)):
        assert i not in trained_on[int(cv.oof_logits[i, 0])]


def test_platt_recalibrates_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    true_logit = (labels * 2 - 1) * 1.0 + rng.normal(0, 1.0, 2000)
    # Two unit-variance classes at +-1: the calibrated log-odds are 2 * true_logit, so 5x over-confident
    # logits need a slope of 0.4.
    slope, intercept = fit_platt(true_logit * 5, labels)
    assert 0.33 < slope < 0.47 and abs(intercept) < 0.2


def test_fold_ensemble_heatmap_explains_its_score_and_exposes_fold_scores() -> None:
    torch.manual_seed(0)
    nets = [HeatmapClassifier(1, 2, channels=(4, 8), strides=(2, 2), pooling="max").eval() for _ in range(3)]
    ensemble = FoldEnsemble(nets, [0.7, 1.3], [-0.2, 0.1]).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        score, heatmap, fold_scores = ensemble(x)
        expected = torch.sigmoid(nets[1](x)[0][:, 0] * 0.7 - 0.2)  # channel 0 of fold 1
    assert torch.allclose(score, heatmap.amax(dim=(2, 3)), atol=1e-6)
    assert fold_scores.shape == (2, 2, 3)
    assert torch.allclose(fold_scores[:, 0, 1], expected, atol=1e-6)


def test_card_figures_choose_the_operating_point_out_of_fold() -> None:
    ids, labels = _patients(40)
    y = np.array(labels)
    folds = patient_folds(ids, labels, 2, seed=0)
    rng = np.random.default_rng(0)
    fold_scores = np.clip(y[:, None] * 0.5 + rng.random((40, 2)) * 0.6, 0, 1)
    fold_scores[np.arange(40), 1 - folds] = y  # the fold that trained on an item is perfect on it
    dev = DevelopmentSet(np.zeros((40, 1)), y, np.array(ids))
    figures = figures_from_scores(dev, fold_scores.mean(axis=1), fold_scores, k=2, seed=0, min_sensitivity=0.9)
    assert np.array_equal(figures.oof_scores, fold_scores[np.arange(40), folds])
    assert figures.cross_validated.auroc < 1.0 and figures.cross_validated.sensitivity >= 0.9


def test_acquisition_shift_is_seeded_bounded_and_erases_margins() -> None:
    x = np.ones((16, 1, 64, 64), np.float16) * 0.5
    a, b = AcquisitionShift(3)(x), AcquisitionShift(3)(x)
    assert torch.equal(a, b) and a.shape == (16, 1, 64, 64)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float((a == 0).float().mean()) > 0.01  # erased margins and rotated-in corners


def test_jpeg_roundtrip_degrades_like_a_low_quality_export() -> None:
    rng = np.random.default_rng(0)
    # A smooth film-like gradient with fine noise: JPEG keeps the gradient and loses the noise.
    image = np.clip(np.linspace(0, 1, 64)[None, :] * np.ones((64, 1)) + rng.normal(0, 0.05, (64, 64)), 0, 1).astype(np.float32)
    low, high = jpeg_roundtrip(image, 25), jpeg_roundtrip(image, 95)
    assert low.shape == image.shape and low.dtype == np.float32
    assert 0.0 <= float(low.min()) and float(low.max()) <= 1.0
    assert float(np.abs(high - image).mean()) < float(np.abs(low - image).mean()) < 0.1
    assert float(np.abs(low - image).mean()) > 0.005  # quality 25 visibly changes the film


def test_framing_keeps_the_lungs_and_blanks_the_periphery() -> None:
    x = np.full((8, 1, 96, 96), 0.5, np.float32)
    framed = AcquisitionShift(1, rotate=0.0, zoom=(1.0, 1.0), shift=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0,
                              erase_prob=0.0, jpeg_prob=0.0, frame_prob=1.0)(x)
    untouched = AcquisitionShift(1, rotate=0.0, zoom=(1.0, 1.0), shift=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0,
                                 erase_prob=0.0, jpeg_prob=0.0, frame_prob=0.0)(x)
    assert torch.all(framed[:, 0, 45, 48] > 0.4)  # the lungs' centre stays
    assert torch.all(framed[:, 0, 0, 0] == 0) and torch.all(framed[:, 0, 95, 95] == 0)  # corners go
    assert torch.all(untouched[:, 0, 0, 0] > 0.4)
