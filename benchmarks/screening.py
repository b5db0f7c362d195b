"""Benchmark: children screened per second from FHIR bundles, a Bulk Data folder and a CSV extract, against
the floor of only parsing the JSON; peak memory per process vs the number of children; 1 and 2 Dask workers.

    python benchmarks/screening.py [--children 20000] [--dask-workers 1 2] [--no-dask] [--repeat 3]

The extract is simulated once (ordinary histories with hard negatives, as in training; about 23
resources a child) and written three ways. Each run is ``run_population`` end to end (read, findings,
growth z-scores, knowledge scores over 12,633 diseases in batches, calibrated risk, explanations and
FHIR output for the flagged) in a fresh process, so that its peak memory is its own. Rates exclude
the knowledge loading (once per process, printed apart); in this process they are per CPU-second
(what a dedicated core does; the machine may be shared), on Dask per wall-second. Goal: within 3x of the JSON floor, i.e.
a city's 1,000,000 FHIR children in about 2 minutes on 2 cores, with memory flat in the children.

The floor (``json.loads`` of each line on one core, as the issue measured it) is taken by each run's own
process just before and after it screens, since this machine's speed drifts by a third within minutes;
two ratios are printed: one core's CPU rate against it (``bundles_cpu_vs_json_loads_floor``, the median
over ``--repeat`` fresh processes), and the machine's cores together on Dask per wall-second against it
(``all_cores_wall_vs_json_loads_floor``), with the minutes a million children would take that way.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and its name would hide the `screening`
# package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

AS_OF = "2025-06-01"
PARTITION_MB = 4.0


def _write_extracts(folder: Path, n: int) -> dict[str, Path]:
    """The same simulated children as bundle NDJSON, a Bulk Data $export folder and a CSV extract."""
    from datasets.fhir_emr import record_to_bundle
    from screening.findings import load_code_maps
    from screening.ontology import load_ontology
    from screening.simulate import simulate_controls

    maps = load_code_maps(load_ontology())
    bundles = folder / "children.ndjson"
    bulk = folder / "export"
    csv_folder = folder / "csv"
    bulk.mkdir()
    csv_folder.mkdir()
    records = []
    by_type: dict[str, object] = {}
    with bundles.open("w") as out:
        for record, _ in simulate_controls(maps, n, seed=2025):
            bundle = record_to_bundle(record)
            out.write(json.dumps(bundle) + "\n")
            for entry in bundle["entry"]:
                rtype = entry["resource"]["resourceType"]
                if rtype not in by_type:
                    by_type[rtype] = (bulk / f"{rtype}.ndjson").open("w")
                by_type[rtype].write(json.dumps(entry["resource"]) + "\n")  # type: ignore[attr-defined]
            records.append(record)
    for handle in by_type.values():
        handle.close()  # type: ignore[attr-defined]
    records.sort(key=lambda r: r.patient_id)  # sorted by patient_id: the CSV reader streams it
    with (csv_folder / "patients.csv").open("w", newline="") as p, (csv_folder / "diagnoses.csv").open(
        "w", newline=""
    ) as d, (csv_folder / "observations.csv").open("w", newline="") as o:
        pw, dw, ow = csv.writer(p), csv.writer(d), csv.writer(o)
        pw.writerow(["patient_id", "birth_date", "sex"])
        dw.writerow(["patient_id", "date", "system", "code", "kind", "status"])
        ow.writerow(["patient_id", "date", "loinc", "value", "unit"])
        for r in records:
            pw.writerow([r.patient_id, r.birth_date.isoformat(), r.sex])
            for f in r.facts:
                dw.writerow([r.patient_id, f.date.isoformat() if f.date else "", f.system, f.code, f.kind,
                             "refuted" if f.refuted else ""])
            for m in r.measurements:
                ow.writerow([r.patient_id, m.date.isoformat(), m.loinc, m.value, m.unit])
    return {"bundles": bundles, "bulk": bulk, "csv": csv_folder}


def _json_floor(path: Path, repeat: int = 1, max_lines: int | None = None) -> dict[str, float]:
    """Children per CPU second of only parsing each line (json.loads, and orjson.loads), the best of
    ``repeat`` passes like the screening runs it is compared with (of the first ``max_lines`` lines)."""
    import orjson

    with path.open("rb") as handle:
        lines = [line for _, line in zip(range(max_lines or sys.maxsize), handle, strict=False)]
    plain = fast = float("inf")
    for _ in range(max(repeat, 1)):
        began = time.process_time()
        for line in lines:
            json.loads(line)
        plain = min(plain, time.process_time() - began)
        began = time.process_time()
        for line in lines:
            orjson.loads(line)
        fast = min(fast, time.process_time() - began)
    return {"json_loads_children_per_s": round(len(lines) / plain), "orjson_loads_children_per_s": round(len(lines) / fast)}


def _measure(args: argparse.Namespace) -> int:
    """One run in this (fresh) process; prints its figures as JSON."""
    from screening.population import RunOptions, load_screener, run_population

    options = RunOptions(
        as_of=AS_OF, budget=0.01, max_age_years=7.0, model_path=None, full_validation=args.full,
        partition_bytes=int(args.partition_mb * (1 << 20)),
    )
    out = Path(args.out)
    began, began_cpu = time.perf_counter(), time.process_time()
    screener = None if args.scheduler else load_screener(options)
    loading_s, loading_cpu = time.perf_counter() - began, time.process_time() - began_cpu
    floors = [_json_floor(Path(args.floor), 3, 2000)] if args.floor else []
    began_cpu = time.process_time()
    summary = run_population(
        Path(args.measure), out, options, quiet=True, workers=1, scheduler=args.scheduler, screener=screener
    )
    cpu = time.process_time() - began_cpu
    children = summary.counts["screened"] + summary.counts["not_screened"]
    wall = summary.seconds_splitting + summary.seconds_screening
    report: dict[str, Any] = {
        "children": children,
        "flagged": summary.counts["flagged"],
        "errors": summary.counts["errors"],
        "partitions": summary.partitions,
        "seconds_loading_knowledge": round(summary.seconds_loading or loading_s, 2),
        "seconds_reading_and_screening": round(wall, 2),
        "children_per_wall_s": round(children / wall),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if screener is not None:  # in this process: CPU time says what a dedicated core would do
        report["cpu_s_loading_knowledge"] = round(loading_cpu, 2)
        report["children_per_cpu_s"] = round(children / cpu)
    if floors:
        # The floor again right after, in this process: the ratio compares work done minutes apart at most.
        floors.append(_json_floor(Path(args.floor), 3, 2000))
        floor = max(f["json_loads_children_per_s"] for f in floors)
        report["json_loads_floor_children_per_s"] = floor
        report["cpu_vs_json_loads_floor"] = round(floor / report["children_per_cpu_s"], 2)
    if args.scheduler:
        from distributed import Client

        with Client(args.scheduler) as client:
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        report["peak_rss_mb_per_dask_worker"] = sorted(round(v) for v in peaks.values())
    print(json.dumps(report))
    return 0


def _run(path: Path, out: Path, *extra: str, repeat: int = 1) -> dict[str, object]:
    """The figures of a fresh process screening ``path``; with ``repeat``, the run with the best CPU rate
    of that many fresh processes (as timeit reports its best: on a shared machine the CPU time of the
    same work varies by a third from run to run, a neighbour's load slowing a core without taking it),
    with every run's rate beside it."""
    command = [sys.executable, __file__, "--measure", str(path), "--out", str(out), *extra]
    command += ["--partition-mb", str(PARTITION_MB)]
    runs: list[dict[str, object]] = []
    for _ in range(max(repeat, 1)):
        done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ})
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        result["load_average"] = [round(x, 1) for x in os.getloadavg()]
        print(f"{path.name} {' '.join(extra)}: {json.dumps(result)}", file=sys.stderr, flush=True)  # as it comes
        runs.append(result)
    rate = "children_per_cpu_s" if "children_per_cpu_s" in runs[0] else "children_per_wall_s"
    best = max(runs, key=lambda r: r[rate])  # type: ignore[arg-type,return-value]
    if len(runs) > 1:
        best[f"{rate}_of_each_run"] = [r[rate] for r in runs]
        if "json_loads_floor_children_per_s" in runs[0]:
            best["runs"] = [{k: r[k] for k in ("children_per_cpu_s", "json_loads_floor_children_per_s")} for r in runs]
        if "cpu_vs_json_loads_floor" in runs[0]:
            ratios = sorted(float(r["cpu_vs_json_loads_floor"]) for r in runs)  # type: ignore[arg-type]
            best["cpu_vs_json_loads_floor_of_each_run"] = [r["cpu_vs_json_loads_floor"] for r in runs]
            best["cpu_vs_json_loads_floor_median"] = ratios[len(ratios) // 2]
    return best


def _head(path: Path, n: int, folder: Path) -> Path:
    target = folder / f"first-{n}.ndjson"
    with path.open("rb") as source, target.open("wb") as out:
        for i, line in enumerate(source):
            if i >= n:
                break
            out.write(line)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--dask-workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--full-sample", type=int, default=2000, help="children read with full fhir.resources validation")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--partition-mb", type=float, default=4.0, help="partition size (about 500 children per 4 MB)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per extract; the best CPU rate is reported")
    args = parser.parse_args()
    if args.measure:
        return _measure(args)
    global PARTITION_MB
    PARTITION_MB = args.partition_mb

    report: dict[str, object] = {"children": args.children, "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        extracts = _write_extracts(folder, args.children)
        report["seconds_simulating_and_writing"] = round(time.perf_counter() - began, 1)
        report["floor"] = _json_floor(extracts["bundles"], args.repeat)
        for name, path in extracts.items():
            # Each run measures the floor (of the bundle lines) itself, just before and after screening.
            report[name] = _run(
                path, folder / f"{name}.flags.ndjson", "--floor", str(extracts["bundles"]), repeat=args.repeat
            )
        report["bundles_full_validation"] = _run(
            _head(extracts["bundles"], args.full_sample, folder), folder / "full.ndjson", "--full"
        )
        report["peak_memory_vs_children"] = {
            n: _run(_head(extracts["bundles"], n, folder), folder / f"mem-{n}.ndjson")["peak_rss_mb"]
            for n in sorted({max(args.children // 10, 1), args.children // 2, args.children})
        }
        if not args.no_dask:
            from screening.population_dask import local_cluster

            for workers in args.dask_workers:
                with local_cluster(workers) as c:  # as screen-emr --workers N starts it
                    report[f"dask_{workers}_workers"] = _run(
                        extracts["bundles"], folder / f"dask-{workers}.ndjson", "--scheduler", c.scheduler_address,
                        repeat=args.repeat,
                    )
        report["load_average_at_end"] = os.getloadavg()
    floor = report["floor"]["json_loads_children_per_s"]  # type: ignore[index]
    bundles: dict[str, Any] = report["bundles"]  # type: ignore[assignment]
    # The headline: each run's CPU rate against the floor measured in the same process around it (the
    # median over the runs); beside it the best run against the floor measured once at the start.
    report["bundles_cpu_vs_json_loads_floor"] = bundles.get(
        "cpu_vs_json_loads_floor_median", bundles.get("cpu_vs_json_loads_floor")
    )
    report["bundles_best_cpu_vs_floor_at_start"] = round(floor / bundles["children_per_cpu_s"], 2)
    # The reading of the goal: the machine's cores together (Dask, one worker a core) against the
    # floor of one core only parsing the same lines (the median of the floors the bundle runs measured:
    # not measured beside a cluster, whose idle workers slowed it by a third); and a million children so.
    cores = report.get(f"dask_{os.cpu_count()}_workers")
    floors = sorted(r["json_loads_floor_children_per_s"] for r in bundles.get("runs", [bundles]))
    if isinstance(cores, dict) and floors:
        # The median of the cluster's runs, as the per-core ratio is the median of its runs.
        walls = sorted(cores.get("children_per_wall_s_of_each_run", [cores["children_per_wall_s"]]))
        wall = walls[len(walls) // 2]
        report["all_cores_wall_vs_json_loads_floor"] = round(floors[len(floors) // 2] / wall, 2)
        report["minutes_per_million_children_on_all_cores"] = round(1e6 / wall / 60, 1)
        one = report.get("dask_1_workers")
        if isinstance(one, dict) and "children_per_wall_s_of_each_run" in one:
            ones = sorted(one["children_per_wall_s_of_each_run"])
            report["dask_scaling_1_to_all_cores"] = round(wall / ones[len(ones) // 2], 2)
    print(json.dumps(report, indent=1))
    print(f"date {date.today().isoformat()}, python {sys.version.split()[0]}, cpus {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
