"""Cross-validate the hand-feature mammography methods against the shipped patch CNN (prints a table).

Every film is oriented chest-wall-left, its pectoral muscle removed, and described by features
(``datasets.mammo_features``); the woman's other film gives the left-right differences. Two
families, each with a few fixed settings, all reported (none is chosen on the held-out women):

- film models: logistic regression / shallow gradient boosting on the film's features, its pair
  differences, or both;
- candidate models: the 24 strongest blobs of each film, labelled by the MIAS centres and radii,
  classified with or without their contralateral comparison; the film score is the maximum over its
  candidates (the detector swept over the breast), whose top candidate is the pointing-game guess.

5-fold cross-validation over women with the folds of ``datasets.splits.patient_folds`` (the card's),
operating point at out-of-fold sensitivity >= 0.90, AUROC interval by bootstrap over women, and the
paired difference from the shipped model's out-of-fold scores (same women resampled for both):

    python -m training.mammography_candidates --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datasets.mammo_features import (
    CANDIDATES,
    CONTRALATERAL_FEATURES,
    candidate_pair_features,
    film_features,
    pair_features,
)
from datasets.splits import patient_folds
from training.errors import TrainingInputError
from training.metrics import evaluate_binary
from training.task_data import mias_films
from training.tasks.mammography import CELL, FOLDS, MIN_SENSITIVITY, _lesions, development_set

__all__ = ["main", "candidate_labels", "paired_auroc_difference"]

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "mammography"


def candidate_labels(points: np.ndarray, lesions: list[tuple[float, float, float]]) -> np.ndarray:
    """1 where a candidate lies inside an annotated lesion (radius at least one heat-map cell, as the pointing game)."""
    return np.array([any(np.hypot(r - lr, c - lc) <= max(radius, CELL) for lr, lc, radius in lesions) for r, c in points], dtype=int)


def paired_auroc_difference(
    labels: np.ndarray, scores: np.ndarray, reference: np.ndarray, groups: np.ndarray, *, seed: int, n_boot: int = 2000
) -> tuple[float, float, float]:
    """(AUROC(scores) - AUROC(reference), 95% low, high) over bootstrap resamples of women."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    women = np.unique(groups)
    members = {w: np.flatnonzero(groups == w) for w in women}
    differences = []
    for _ in range(n_boot):
        idx = np.concatenate([members[w] for w in rng.choice(women, len(women))])
        if labels[idx].min() == labels[idx].max():
            continue
        differences.append(roc_auc_score(labels[idx], scores[idx]) - roc_auc_score(labels[idx], reference[idx]))
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(roc_auc_score(labels, scores) - roc_auc_score(labels, reference)), float(low), float(high)


def _shipped_out_of_fold(x: np.ndarray, folds: np.ndarray) -> np.ndarray:
    from training.card_figures import run_ensemble

    bundle = json.loads((SHIPPED / "bundle.json").read_text())
    _, fold_scores = run_ensemble(SHIPPED / "model.onnx", x, input_name=bundle["input"]["name"], batch_size=4)
    return fold_scores[np.arange(len(folds)), folds]


def _models() -> dict[str, Callable[[], Any]]:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logistic(c: float) -> Callable[[], Any]:
        return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))

    def boosting(depth: int) -> Callable[[], Any]:
        return lambda: GradientBoostingClassifier(max_depth=depth, n_estimators=150, learning_rate=0.05, subsample=0.8, random_state=0)

    return {"LR C=0.01": logistic(0.01), "LR C=0.1": logistic(0.1), "LR C=1": logistic(1.0), "GBM depth 2": boosting(2), "GBM depth 3": boosting(3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None, help="folder for the prepared 512 px films")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        films = mias_films(args.data)
    except TrainingInputError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    dev = development_set(args.data, args.cache)
    labels, groups = dev.labels.astype(int), dev.groups
    n = len(labels)
    start = time.process_time()
    features = [film_features(dev.x[i, 0].astype(np.float32)) for i in range(n)]
    extraction_cpu = time.process_time() - start
    other = np.array([next(k for k in range(n) if groups[k] == groups[i] and k != i) for i in range(n)])
    folds = patient_folds(list(groups), list(labels), FOLDS, args.seed)
    film = np.stack([f.values for f in features])
    pair = np.stack([pair_features(features[i], features[other[i]]) for i in range(n)])
    candidates = np.stack([np.hstack([features[i].candidates, candidate_pair_features(features[i], features[other[i]])]) for i in range(n)])
    lesions = [_lesions(f) for f in films]
    on_lesion = np.stack([candidate_labels(features[i].image_points(), lesions[i]) for i in range(n)])
    # Films whose finding has no centre (diffuse calcifications) have no safe negatives: no candidate training rows.
    usable = np.array([not (f.findings and not les) for f, les in zip(films, lesions, strict=True)])
    reference = _shipped_out_of_fold(dev.x, folds)
    rows: list[dict[str, Any]] = []

    def report(name: str, oof: np.ndarray, pointing: tuple[int, int] | None, cpu: float) -> None:
        m = evaluate_binary(labels, oof, min_sensitivity=MIN_SENSITIVITY, seed=args.seed, groups=groups)
        difference = paired_auroc_difference(labels, oof, reference, groups, seed=args.seed)
        row = {"method": name, "auroc": m.auroc, "ci": [m.auroc_ci_low, m.auroc_ci_high], "sensitivity": m.sensitivity,
               "specificity": m.specificity, "vs_shipped": difference, "pointing": pointing, "fit_cpu_s": round(cpu, 1)}
        rows.append(row)
        point = f"  pointing {pointing[0]}/{pointing[1]} = {pointing[0] / pointing[1]:.2f}" if pointing else ""
        print(f"{name:46s} AUROC {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f})  sens {m.sensitivity:.3f}  "
              f"spec {m.specificity:.3f}  vs shipped {difference[0]:+.3f} ({difference[1]:+.3f} to {difference[2]:+.3f}){point}", flush=True)

    report("shipped patch CNN (models/mammography, out-of-fold)", reference, None, 0.0)
    for set_name, x in (("film", film), ("pair differences", pair), ("film + pair", np.hstack([film, pair]))):
        for model_name, make in _models().items():
            begin = time.process_time()
            oof = np.zeros(n)
            for k in range(FOLDS):
                train, test = folds != k, folds == k
                oof[test] = make().fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
            report(f"film {model_name} on {set_name}", oof, None, time.process_time() - begin)
    width = candidates.shape[2]
    for set_name, cols in (("own", list(range(width - len(CONTRALATERAL_FEATURES)))), ("own + contralateral", list(range(width)))):
        for model_name, make in _models().items():
            begin = time.process_time()
            oof, hits, pointed = np.zeros(n), 0, 0
            for k in range(FOLDS):
                train, test = (folds != k) & usable, folds == k
                model = make().fit(candidates[train][:, :, cols].reshape(-1, len(cols)), on_lesion[train].ravel())
                probability = model.predict_proba(candidates[test][:, :, cols].reshape(-1, len(cols)))[:, 1].reshape(-1, CANDIDATES)
                oof[test] = probability.max(axis=1)
                for j, i in enumerate(np.flatnonzero(test)):
                    if lesions[i]:
                        pointed += 1
                        hits += int(on_lesion[i, int(np.argmax(probability[j]))])
            report(f"candidates {model_name} on {set_name}", oof, (hits, pointed), time.process_time() - begin)
    print(f"feature extraction: {extraction_cpu:.0f} s CPU for {n} films; candidate on a lesion in "
          f"{sum(int(on_lesion[i].any()) for i in range(n) if lesions[i])} of {sum(bool(les) for les in lesions)} films with a centre")
    print(json.dumps({"extraction_cpu_s": round(extraction_cpu), "rows": rows}))


if __name__ == "__main__":
    main()
