"""The networks of the three tasks, built from MONAI blocks (imports torch: training and benchmarks only).

All three are the same small fully-convolutional shape: residual MONAI units downsample to a
class-logit map, pooled into an image score. The logit map is the coarse localisation (heat-map),
and because the net is fully convolutional a model trained on patches also scores a whole film.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = ["HeatmapClassifier", "ScoreAndHeatmap", "FoldEnsemble", "build_network"]


class HeatmapClassifier(nn.Module):
    """Residual conv stages -> 1x1 conv to ``out_channels`` logit maps -> avg or max pooling.

    Returns ``(logits [N, C], logit_map [N, C, h, w])``. Max pooling suits "is there one
    suspicious spot anywhere" (mammography, CT patches); average pooling suits diffuse disease
    (pneumonia).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 96),
        strides: Sequence[int] = (2, 2, 2, 2),
        pooling: str = "avg",
        dropout: float = 0.1,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if pooling not in {"avg", "max"}:
            raise ValueError(f"pooling must be avg or max, not {pooling}")
        self.pooling = pooling
        layers: list[nn.Module] = [
            Convolution(2, in_channels, channels[0], strides=stem_stride, kernel_size=3, norm="batch", act="relu")
        ]
        previous = channels[0]
        for width, stride in zip(channels, strides, strict=True):
            layers.append(
                ResidualUnit(2, previous, width, strides=stride, kernel_size=3, subunits=2, norm="batch", act="relu")
            )
            previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(previous, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit_map = self.head(self.dropout(self.features(x)))
        if self.pooling == "max":
            logits = torch.amax(logit_map, dim=(2, 3))
        else:
            logits = torch.mean(logit_map, dim=(2, 3))
        return logits, logit_map


class ScoreAndHeatmap(nn.Module):
    """The exported form: probabilities ``score [N, C]`` and ``heatmap [N, C, h, w]`` in [0, 1]."""

    def __init__(self, network: HeatmapClassifier) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, logit_map = self.network(x)
        return torch.sigmoid(logits), torch.sigmoid(logit_map)


class FoldEnsemble(nn.Module):
    """The k fold networks of a cross-validation as one exported model.

    Outputs ``score [N, C]``, ``heatmap [N, C, h, w]`` (the calibrated mean logit map) and
    ``fold_scores [N, C, k]`` (each fold network's calibrated score). Shipping the fold networks
    makes the cross-validated figures reproducible from the file: an item's out-of-fold score is
    the column of the fold that did not train on its patient.

    ``score="pooled"`` pools the mean logit map (Platt-calibrated on out-of-fold predictions), so the
    heat-map's peak explains the score. ``score="fold_mean"`` averages the fold scores instead: the
    operating point is chosen on single fold networks' calibrated scores, and with max pooling the
    maximum of a mean map runs far lower than each network's own maximum (mammography shipped that
    way flagged 0.10 of abnormal films at a threshold chosen for 0.90), while the mean of the fold
    scores keeps the distribution the threshold was chosen on.
    """

    def __init__(
        self, networks: Sequence[HeatmapClassifier], slope: Sequence[float], intercept: Sequence[float], *, score: str = "pooled"
    ) -> None:
        super().__init__()
        if score not in {"pooled", "fold_mean"}:
            raise ValueError(f"score must be pooled or fold_mean, not {score}")
        self.score = score
        self.networks = nn.ModuleList(networks)
        self.pooling = networks[0].pooling
        self.register_buffer("slope", torch.tensor(list(slope), dtype=torch.float32))
        self.register_buffer("intercept", torch.tensor(list(intercept), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = [net(x) for net in self.networks]
        fold_logits = torch.stack([logits for logits, _ in outputs], dim=-1)
        mean_map = torch.stack([logit_map for _, logit_map in outputs]).mean(dim=0)
        pooled = torch.amax(mean_map, dim=(2, 3)) if self.pooling == "max" else torch.mean(mean_map, dim=(2, 3))
        slope, intercept = self.slope, self.intercept
        heatmap = torch.sigmoid(mean_map * slope[:, None, None] + intercept[:, None, None])
        fold_scores = torch.sigmoid(fold_logits * slope[:, None] + intercept[:, None])
        score = fold_scores.mean(dim=-1) if self.score == "fold_mean" else torch.sigmoid(pooled * slope + intercept)
        return score, heatmap, fold_scores


def build_network(task: str) -> HeatmapClassifier:
    """The architecture of each task, sized for 2 CPU cores (all under 1 M parameters)."""
    if task == "chest-xray":
        # A strided stem: 128 px films carry pneumonia's texture at 64 px resolution, at a quarter of the cost;
        # 96 channels last (not 128) so that five fold networks train on a shared 2-core CPU.
        return HeatmapClassifier(1, 1, channels=(16, 32, 64, 96), strides=(2, 2, 2, 1), pooling="avg", stem_stride=2)
    if task == "mammography":
        # Two outputs: suspicious finding (any) and malignant finding.
        # Input is the whole 512 px film (0.4 mm pixels) or a 64 px patch of it; output map stride 16.
        return HeatmapClassifier(1, 2, channels=(16, 32, 48, 64), strides=(2, 2, 2, 1), pooling="max", stem_stride=2)
    if task == "ct-chest":
        return HeatmapClassifier(3, 1, channels=(16, 32, 64), strides=(2, 2, 1), pooling="max")
    raise ValueError(f"unknown task {task!r}")
