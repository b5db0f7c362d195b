"""Ingest throughput: a 300-instance CT study sent with dcmtk's storescu to medscreen and to dcmtk's storescp.

    python benchmarks/ingest.py [--data ../shared/data] [--instances 300] [--receivers 2] [--repeat 3]

Both receivers write every instance to disk; medscreen also fsyncs it and records it in its database
before answering success. Prints instances/s over 1 and over 4 associations for both, their ratio, and
the completeness delay (last instance -> study complete) for the quiet period used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.dcmtk import dcmtk  # noqa: E402
from benchmarks.study_factory import write_ct_study  # noqa: E402
from tests.peers import wait_for  # noqa: E402
from tests.ports import free_port  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(port: int, files: list[Path], associations: int, called_ae: str) -> float:
    """Send ``files`` over ``associations`` parallel storescu processes; returns instances per second."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [dcmtk("storescu"), "-aec", called_ae, "127.0.0.1", str(port), *map(str, chunk)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=600)
        if sender.returncode != 0:
            raise SystemExit(f"storescu failed: {err.decode()[-500:]}")
    return len(files) / (time.perf_counter() - start)


def start_storescp(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir()
    process = subprocess.Popen(
        [dcmtk("storescp"), "--fork", "-od", str(out), str(port)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: subprocess.run([dcmtk("echoscu"), "127.0.0.1", str(port)], capture_output=True).returncode == 0, 30, "storescp")
    return process, port


def start_medscreen(workdir: Path, receivers: int, quiet: float) -> tuple[subprocess.Popen[bytes], int, Path]:
    home = workdir / "medscreen"
    port = free_port()
    env = {
        **ENV,
        "MEDSCREEN_HOME": str(home),
        "MEDSCREEN_HTTP_PORT": str(free_port()),
        "MEDSCREEN_DICOM_PORT": str(port),
        "MEDSCREEN_DICOM_RECEIVERS": str(receivers),
        "MEDSCREEN_QUIET_PERIOD_S": str(quiet),
        "MEDSCREEN_COMPLETENESS_POLL_S": "0.2",
        "MEDSCREEN_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "medscreen", "serve"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(
        lambda: subprocess.run([dcmtk("echoscu"), "-aec", "MEDSCREEN", "127.0.0.1", str(port)], capture_output=True).returncode == 0,
        120,
        "medscreen",
    )
    return process, port, home


def completeness_delays(home: Path) -> list[float]:
    db = sqlite3.connect(home / "medscreen.db")
    rows = db.execute("SELECT detail FROM study_events WHERE kind = 'complete'").fetchall()
    return [json.loads(row[0])["delay_after_last_instance_s"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--receivers", type=int, default=2, help="medscreen receiver processes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=10.0, help="quiet period (s) for the completeness figure")
    args = parser.parse_args()

    slices = sorted((args.data / "ct" / "lidc").rglob("*.dcm")) or sorted((REPO / "tests/fixtures/inference/ct").glob("*.dcm"))
    source = slices[0]
    workdir = Path(tempfile.mkdtemp(prefix="medscreen-ingest-bench-"))
    print(f"source slice: {source} ({source.stat().st_size / 1e3:.0f} kB); {args.instances} instances per study; "
          f"{os.cpu_count()} CPUs; medscreen receivers: {args.receivers}", flush=True)
    storescp, scp_port = start_storescp(workdir)
    medscreen, ms_port, home = start_medscreen(workdir, args.receivers, args.quiet)
    results: dict[tuple[str, int], list[float]] = {}
    try:
        run = 0
        for _ in range(args.repeat):
            for associations in (1, 4):
                for name, port, ae in (("storescp", scp_port, "STORESCP"), ("medscreen", ms_port, "MEDSCREEN")):
                    files = write_ct_study(source, workdir / f"study{run}", args.instances)
                    run += 1
                    rate = send(port, files, associations, ae)
                    results.setdefault((name, associations), []).append(rate)
                    shutil.rmtree(files[0].parent)
        time.sleep(args.quiet + 2)
        delays = completeness_delays(home)
    finally:
        os.killpg(medscreen.pid, 15)
        storescp.terminate()
        medscreen.wait(timeout=30)
        storescp.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{'receiver':<12}{'associations':>14}{'instances/s (median of ' + str(args.repeat) + ')':>32}{'runs':>28}")
    for (name, associations), rates in sorted(results.items()):
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{name:<12}{associations:>14}{statistics.median(rates):>32.0f}{runs:>28}")
    for associations in (1, 4):
        ratio = statistics.median(results[("medscreen", associations)]) / statistics.median(results[("storescp", associations)])
        print(f"medscreen / storescp over {associations} association(s): {ratio:.2f}")
    if delays:
        print(f"completeness delay after the last instance (quiet period {args.quiet:.0f} s): "
              f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s over {len(delays)} studies")


if __name__ == "__main__":
    main()
