"""Benchmark: children screened per second and peak memory, for 100,000 simulated children.

    python benchmarks/screening.py [--children 100000] [--workers 2]

Children are simulated in the worker processes (ordinary histories with hard negatives, as in
training), then screened end to end: code maps, growth z-scores, knowledge scores over 12,633
diseases, calibrated risk, and the explanation of flagged children. Reading FHIR is timed separately
on a sample, as its cost (pydantic validation) adds to the screening rate on a FHIR extract.
The goal: a city's 1,000,000 children in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `screening`
# package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

CHUNK = 2000


def _init() -> None:
    global SCREENER, MAPS
    from screening.screener import Screener

    SCREENER = Screener.load(0.01)
    MAPS = SCREENER.maps


def _screen_chunk(start: int) -> tuple[int, int, float, float]:
    import random

    from screening.simulate import simulate_control

    rng = random.Random(start)
    records = [simulate_control(MAPS, rng, start + i) for i in range(CHUNK)]
    began, cpu_began = time.perf_counter(), time.process_time()
    flagged = sum(SCREENER.screen(record, as_of).flagged for record, as_of in records)
    return len(records), flagged, time.perf_counter() - began, time.process_time() - cpu_began


def _fhir_rate(n: int) -> float:
    import random

    from datasets.fhir_emr import read_fhir, record_to_bundle
    from screening.simulate import simulate_control

    _init()
    rng = random.Random(99)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.ndjson"
        with path.open("w") as out:
            for i in range(n):
                out.write(json.dumps(record_to_bundle(simulate_control(MAPS, rng, i)[0])) + "\n")
        began = time.perf_counter()
        count = sum(1 for _ in read_fhir(path))
        return count / (time.perf_counter() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fhir-sample", type=int, default=2000)
    args = parser.parse_args()
    starts = list(range(0, args.children, CHUNK))
    began = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers, initializer=_init) as pool:
        results = pool.map(_screen_chunk, starts, chunksize=1)
    wall = time.perf_counter() - began
    screened = sum(r[0] for r in results)
    flagged = sum(r[1] for r in results)
    wall_screening = sum(r[2] for r in results)
    cpu_screening = sum(r[3] for r in results)
    peak_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    per_core = screened / cpu_screening  # CPU time: what a dedicated core would do
    per_core_wall = screened / wall_screening  # wall time on this (shared) machine
    report = {
        "children": screened,
        "workers": args.workers,
        "flagged": flagged,
        "flag_rate": round(flagged / screened, 4),
        "wall_s_including_simulation_and_load": round(wall, 1),
        "screening_cpu_s_per_worker": round(cpu_screening / args.workers, 1),
        "screening_wall_s_per_worker": round(wall_screening / args.workers, 1),
        "children_per_cpu_s": round(per_core),
        "children_per_wall_s_per_worker": round(per_core_wall),
        "projected_s_for_1M_children_on_2_dedicated_cores": round(1_000_000 / (per_core * 2), 1),
        "projected_s_for_1M_children_at_measured_wall_rate": round(1_000_000 / (per_core_wall * args.workers), 1),
        "peak_rss_mb_per_worker": round(peak_children_mb),
    }
    report["fhir_reading_children_per_s_per_core"] = round(_fhir_rate(args.fhir_sample))
    report["peak_rss_mb_main_incl_fhir_sample"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=1))
    print(f"date {date.today().isoformat()}, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
