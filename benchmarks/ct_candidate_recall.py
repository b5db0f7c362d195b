"""Recall of the CT candidate step on every LIDC reader mark, per patient, and its cost per series.

    nice -n 10 python benchmarks/ct_candidate_recall.py [--data ../shared/data] [--slices 300]

For each slab under ``ct/lidc``: the reader marks (one per reader, nodule and slice) rated malignancy >= 3
and all marks with a rating, how many have a candidate (within one slice, and the mark's radius, at least
5 px, plus 4 px: the training's rule), for the density maxima alone (``max_blobs=0``, the step before the
blob search) and with at most ``MAX_BLOB_CANDIDATES`` blobs, and the candidates per series (serving runs
``SERVED_BLOB_CANDIDATES``, printed first). Then the CPU time of the step on a
series of ``--slices`` slices (the first slab repeated, every other copy reversed so that anatomy stays
continuous), with and without the blob search.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from datasets.ct_candidates import MAX_BLOB_CANDIDATES, SERVED_BLOB_CANDIDATES, Candidate, find_candidates
from datasets.dicom_series import Volume
from datasets.lidc import load_lidc, nodule_centres


def _recalled(candidates: list[Candidate], marks: list[tuple[int, int, int, float, float]]) -> int:
    return sum(any(abs(k.slice_index - s) <= 1 and np.hypot(k.row - r, k.col - c) <= max(radius, 5.0) + 4 for k in candidates)
               for s, r, c, radius, _ in marks)


def _long_series(volume: Volume, slices: int) -> Volume:
    copies = -(-slices // volume.hu.shape[0])
    hu = np.concatenate([volume.hu if i % 2 == 0 else volume.hu[::-1] for i in range(copies)])[:slices]
    return dataclasses.replace(volume, hu=np.ascontiguousarray(hu), z_positions=tuple(i * volume.spacing_mm[0] for i in range(slices)),
                               sop_instance_uids=tuple(str(i) for i in range(slices)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    totals = np.zeros(4, int)
    counts = np.zeros(4, int)
    volumes = []
    print(f"served: at most {SERVED_BLOB_CANDIDATES} blob candidates per series; measured here: 0 and {MAX_BLOB_CANDIDATES}")
    print("patient          slices  marks>=3 density/+blobs     marks(any) density/+blobs     candidates density/+blobs")
    for case in load_lidc(args.data / "ct" / "lidc"):
        volume = case.volume()
        volumes.append(volume)
        marks = [m for m in nodule_centres(case, volume) if m[4] > 0]
        positive = [m for m in marks if m[4] >= 3]
        density, both = find_candidates(volume, max_blobs=0), find_candidates(volume, max_blobs=MAX_BLOB_CANDIDATES)
        row = [_recalled(density, positive), _recalled(both, positive), _recalled(density, marks), _recalled(both, marks)]
        totals += row
        counts += [len(positive), len(positive), len(marks), len(marks)]
        print(f"{case.patient_id:16s} {volume.hu.shape[0]:6d}  {row[0]:3d}/{row[1]:3d} of {len(positive):3d}"
              f"              {row[2]:3d}/{row[3]:3d} of {len(marks):3d}              {len(density):4d}/{len(both):4d}")
    print(f"all patients             {totals[0]:3d}/{totals[1]:3d} of {counts[0]:3d}              {totals[2]:3d}/{totals[3]:3d} of {counts[2]:3d}")
    series = _long_series(volumes[0], args.slices)
    for max_blobs, label in ((0, "density maxima only"), (MAX_BLOB_CANDIDATES, "density maxima + blobs")):
        start = time.process_time()
        found = find_candidates(series, max_blobs=max_blobs)
        print(f"{args.slices}-slice series, {label}: {len(found)} candidates, {time.process_time() - start:.2f} s CPU")


if __name__ == "__main__":
    main()
