"""Where the chest model points: how often the heat-map's peak falls inside the lung fields, before and
after the lung-field mask, on a seeded sample of Kermany development films.

    nice -n 10 python benchmarks/chest_localisation.py --data ../shared/data --limit 300 [--plot PATH]

"Before" is the shipped ensemble's own coarse map (8x8 at 128 px, 14x14 at 224 px) (its hottest cell's centre); "after" is the map as served
(``datasets.lung_fields.heatmap_within``: interpolated, zero outside the fields). The lung fields are the
heuristic mask itself, not an annotation (the data has none), so "inside" means inside that mask. Also
prints where the outside peaks were, how the masks were found, and the mask's time per film.
``--plot`` redraws the card's heat-map examples (``models/chest-xray/plots/heatmaps_lung_fields.png``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _where(row: float, col: float, size: int) -> str:
    if row < 0.2 * size:
        return "top fifth (neck, shoulders)"
    if row >= 0.8 * size:
        return "bottom fifth (abdomen)"
    if col < 0.15 * size or col >= 0.85 * size:
        return "lateral edges (arms, markers)"
    return "central film (mediastinum, heart, between fields)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--limit", type=int, default=300, help="films per class (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "chest-xray")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the card's heat-map examples here")
    args = parser.parse_args()

    import json

    import onnxruntime as ort
    from scipy import ndimage

    from datasets.lung_fields import heatmap_within, lung_fields
    from datasets.preprocess import PreprocessSpec
    from training.tasks.chest_xray import development_set

    # The bundle's own input (an older bundle may be smaller than this build's).
    spec = PreprocessSpec.from_dict(json.loads((args.model_dir / "bundle.json").read_text())["preprocess"])
    dev = development_set(args.data, None, args.limit, args.seed, spec=spec)
    x = dev.x.astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(args.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    heatmaps = np.concatenate([session.run(["heatmap"], {"image": x[i : i + 64]})[0][:, 0] for i in range(0, len(x), 64)])

    size = x.shape[-1]
    before = np.zeros(len(x), bool)
    after = np.zeros(len(x), bool)
    methods: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    moved: list[float] = []
    on_edge = np.zeros(len(x), bool)
    tied = np.zeros(len(x), bool)
    mask_seconds = 0.0
    for i in range(len(x)):
        started = time.perf_counter()
        fields = lung_fields(x[i, 0])
        mask_seconds += time.perf_counter() - started
        methods[fields.method] += 1
        coarse = heatmaps[i]
        cell = size / coarse.shape[0]
        # What the scorer did before the mask: the hottest cell, the first in raster order when several tie.
        r, c = np.unravel_index(int(np.argmax(coarse)), coarse.shape)
        tied[i] = int((coarse == coarse.max()).sum()) > 1
        row, col = (r + 0.5) * cell, (c + 0.5) * cell
        before[i] = fields.mask[int(row), int(col)]
        if not before[i]:
            outside[_where(row, col, size)] += 1
        served, _ = heatmap_within(coarse, fields.mask)
        peak = np.unravel_index(int(np.argmax(served)), served.shape)
        after[i] = fields.mask[peak]
        on_edge[i] = not ndimage.binary_erosion(fields.mask, iterations=3)[peak]
        moved.append(float(np.hypot(peak[0] - row, peak[1] - col)) / size)

    print(f"chest-xray heat-map peak inside the lung fields, {len(x)} Kermany development films "
          f"({int(dev.labels.sum())} pneumonia, {int((dev.labels == 0).sum())} normal; seed {args.seed})")
    for name, keep in (("all", np.ones(len(x), bool)), ("pneumonia", dev.labels == 1), ("normal", dev.labels == 0)):
        print(f"  {name:<10} before {before[keep].mean():.3f} ({int(before[keep].sum())}/{int(keep.sum())})   "
              f"after {after[keep].mean():.3f} ({int(after[keep].sum())}/{int(keep.sum())})")
    print(f"  after: peak within 3 px of the fields' edge (the model's evidence lay outside) {on_edge.mean():.3f}; "
          f"films whose {heatmaps.shape[1]}x{heatmaps.shape[2]} map ties at its maximum (saturated cells) {tied.mean():.3f}")
    print("  masks found as: " + ", ".join(f"{k} {v}" for k, v in methods.most_common()))
    print("  peaks outside the fields before the mask: " + (", ".join(f"{k} {v}" for k, v in outside.most_common()) or "none"))
    print(f"  peak moved by the mask: median {np.median(moved):.3f}, p90 {np.percentile(moved, 90):.3f} of the film side")
    print(f"  lung-field mask: {1000 * mask_seconds / len(x):.1f} ms per film ({size} px)")
    if args.plot:
        from training.tasks.chest_xray import plot_heatmap_examples

        print(f"  heat-map examples: {plot_heatmap_examples(args.model_dir / 'model.onnx', dev, args.plot, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
