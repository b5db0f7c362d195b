"""The shipped ct-chest fold networks on the candidates of the blob search, out of fold: where each points.

    python benchmarks/ct_blob_pointing.py [--data ../shared/data] [--model models/ct-chest]

Each LIDC patient's candidates are scored by the fold network of the shipped ensemble that never saw the patient
(``fold_scores``, the fold plan in ``metrics.json``), once with the density maxima the model was trained and
validated on (``max_blobs=0``, what serving runs: ``SERVED_BLOB_CANDIDATES``) and once with the blob search added
(``MAX_BLOB_CANDIDATES``). Printed per patient: candidates, the best candidate's score and position, and whether it
is a hit of the card's pointing game (``training.ct_figures.point_patient``). The blob search was written after the
density maxima missed LIDC-IDRI-0002's ground-glass nodule, so its figure on that patient is optimistic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from datasets import ct_candidates  # noqa: E402
from datasets.lidc import load_lidc  # noqa: E402
from training import ct_figures  # noqa: E402
from training.card_figures import run_ensemble  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ct-chest")
    args = parser.parse_args()
    metrics = json.loads((args.model / "metrics.json").read_text())
    fold_of = {patient: int(fold) for fold, patient in metrics["cross_validation"]["fold_patient"].items()}
    onnx_path = args.model / "model.onnx"
    cases = sorted(load_lidc(args.data / "ct" / "lidc"), key=lambda c: fold_of[c.patient_id])
    volumes = {c.patient_id: c.volume() for c in cases}
    print(f"serving runs max_blobs={ct_candidates.SERVED_BLOB_CANDIDATES}")
    print(f"{'candidates':<22}{'patient':<16}{'fold':>5}{'n':>6}{'best score':>11}  {'slice, row, col':<16}{'hit':>5}{'to mark (mm)':>13}")
    for label, blobs in (("density maxima", 0), (f"+ blobs (<= {ct_candidates.MAX_BLOB_CANDIDATES})", ct_candidates.MAX_BLOB_CANDIDATES)):
        hits = 0
        for case in cases:
            fold = fold_of[case.patient_id]

            def candidates(volume: object, b: int = blobs) -> list[ct_candidates.Candidate]:
                return ct_candidates.find_candidates(volume, max_blobs=b)  # type: ignore[arg-type]

            def fold_score(x, f: int = fold):  # type: ignore[no-untyped-def]
                return run_ensemble(onnx_path, x, input_name="patches")[1][:, f]

            ct_figures.find_candidates = candidates  # type: ignore[assignment]
            p = ct_figures.point_patient(case, volumes[case.patient_id], fold, fold_score)
            hits += p.hit
            print(f"{label:<22}{case.patient_id:<16}{fold:>5}{p.n_candidates:>6}{p.score:>11.3f}  "
                  f"{f'{p.slice_index}, {p.row}, {p.col}':<16}{'yes' if p.hit else 'no':>5}{p.nearest_mark_mm or float('nan'):>13.1f}")
        print(f"{label}: pointing game {hits} of {len(cases)} patients")


if __name__ == "__main__":
    main()
