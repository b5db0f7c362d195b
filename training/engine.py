"""The training loop shared by the three tasks: seeded, CPU, with a tqdm progress bar."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from training.augment import augment_batch

__all__ = ["ArraySet", "seed_everything", "predict", "fit", "FitResult"]

log = logging.getLogger(__name__)


@dataclass
class ArraySet:
    """Inputs [N, C, H, W] (float32 or float16 in [0, 1]) with targets [N, K] in {0, 1}."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    augment: bool = True
    # Expensive sets (whole mammograms) can join late, as a fine-tuning stage, to fit the CPU budget.
    from_epoch: int = 0

    def __post_init__(self) -> None:
        if self.y.ndim == 1:
            self.y = self.y[:, None]


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def predict(model: torch.nn.Module, x: np.ndarray, *, batch_size: int = 64, logits: bool = False) -> np.ndarray:
    """Sigmoid probabilities [N, K] of the pooled logits (or the logits), in eval mode, without augmentation."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            pooled, _ = model(batch)
            outputs.append((pooled if logits else torch.sigmoid(pooled)).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 1), np.float32)


def fit(
    model: torch.nn.Module,
    train_sets: Sequence[ArraySet],
    *,
    epochs: int,
    lr: float,
    seed: int,
    transform: Callable | None,
    validate: Callable[[torch.nn.Module], dict[str, float]],
    pos_weight: Sequence[float] | None = None,
    on_epoch: Callable[[int, dict[str, float]], object] | None = None,  # its return value is ignored
    selection_metric: str = "val_auroc",
    desc: str = "train",
    select_best: bool = True,
) -> FitResult:
    """Adam + cosine schedule; keeps the weights of the epoch with the best ``selection_metric``.

    ``select_best=False`` keeps the last epoch's weights: cross-validation folds use it so that the
    held-out fold, which ``validate`` may still report on, never chooses the weights it is scored with.

    Several ``train_sets`` (e.g. mammography patches and whole films, which differ in size) are
    interleaved batch by batch in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total_steps = sum(-(-len(s.x) // s.batch_size) * max(epochs - s.from_epoch, 0) for s in train_sets)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.15)
    weight = torch.tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    result = FitResult(best_epoch=-1, best_score=-np.inf)
    best_state = None
    started = time.monotonic()
    for epoch in range(epochs):
        model.train()
        plan = [
            (i, b)
            for i, s in enumerate(train_sets)
            if epoch >= s.from_epoch
            for b in np.array_split(rng.permutation(len(s.x)), -(-len(s.x) // s.batch_size))
        ]
        order = rng.permutation(len(plan))
        total, count = 0.0, 0
        # disable=None: a bar on a terminal only, not redrawn into a training log.
        with tqdm(order, desc=f"{desc} epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=None) as bar:
            for k in bar:
                set_index, idx = plan[k]
                data = train_sets[set_index]
                x = data.x[np.sort(idx)]
                if transform is not None and data.augment and getattr(transform, "batched", False):
                    inputs = transform(x)
                elif transform is not None and data.augment:
                    inputs = augment_batch(transform, x.astype(np.float32))
                else:
                    inputs = torch.from_numpy(x.astype(np.float32))
                targets = torch.from_numpy(data.y[np.sort(idx)].astype(np.float32))
                logits, _ = model(inputs)
                loss = loss_fn(logits, targets)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                scheduler.step()
                total += loss.item() * len(idx)
                count += len(idx)
                bar.set_postfix(loss=f"{total / count:.4f}")
        metrics = {"train_loss": total / max(count, 1), **validate(model)}
        metrics["epoch_seconds"] = time.monotonic() - started - sum(h.get("epoch_seconds", 0.0) for h in result.history)
        result.history.append(metrics)
        log.info("%s epoch %d: %s", desc, epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        score = metrics.get(selection_metric, -metrics["train_loss"])
        if score > result.best_score or not select_best:
            result.best_score, result.best_epoch = float(score), epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.monotonic() - started
    model.eval()
    return result
