"""Time to result: last instance received -> result stored -> written back to the PACS, per modality.

    python benchmarks/time_to_result.py [--data ../shared/data] [--studies 10] [--ct-studies 3] [--ct-slices 300]

Runs `medscreen serve` with dcmtk's storescp as the write-back PACS, sends wrapped real studies (Kermany
chest X-rays as DX, MIAS film pairs as MG, LIDC slices as a CT series) with storescu, and reads each
study's timeline. The quiet period (completeness) is reported separately; the figures start at "complete".
Shadow versions' results are sent too (``MEDSCREEN_WRITEBACK_SHADOW``), so every modality's path is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.dcmtk import dcmtk  # noqa: E402
from benchmarks.study_factory import wrap_mammogram, wrap_radiograph, write_ct_study  # noqa: E402
from tests.peers import wait_for  # noqa: E402
from tests.ports import free_port  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}


def _echo(port: int, ae: str) -> bool:
    return subprocess.run([dcmtk("echoscu"), "-aec", ae, "127.0.0.1", str(port)], capture_output=True).returncode == 0


def build_studies(data: Path, out: Path, studies: int, ct_studies: int, ct_slices: int) -> dict[str, list[list[Path]]]:
    fixtures = REPO / "tests" / "fixtures" / "datasets"
    kermany = sorted((data / "chest-xray" / "kermany" / "train").rglob("*.jpeg")) or sorted((fixtures / "kermany").rglob("*.jpeg"))
    mias = sorted((data / "mammography" / "mias").glob("mdb*.png")) or sorted((fixtures / "mias").glob("mdb*.png"))
    lidc = sorted((data / "ct" / "lidc").rglob("*.dcm")) or sorted((REPO / "tests/fixtures/inference/ct").glob("*.dcm"))
    rng = np.random.default_rng(0)
    result: dict[str, list[list[Path]]] = {"DX": [], "MG": [], "CT": []}
    for i in range(studies):
        image = kermany[int(rng.integers(len(kermany)))]
        result["DX"].append([wrap_radiograph(image, out / f"dx{i}" / "1.dcm", patient_id=f"DX{i}")])
        pair = int(rng.integers(len(mias) // 2)) * 2
        from pydicom.uid import generate_uid

        uid = str(generate_uid())
        result["MG"].append([
            wrap_mammogram(mias[pair], out / f"mg{i}" / "l.dcm", laterality="L", study_uid=uid, patient_id=f"MG{i}"),
            wrap_mammogram(mias[pair + 1], out / f"mg{i}" / "r.dcm", laterality="R", study_uid=uid, patient_id=f"MG{i}"),
        ])
    for i in range(ct_studies):
        result["CT"].append(write_ct_study(lidc[len(lidc) // 2], out / f"ct{i}", ct_slices))
    return result


def timeline(db: Path) -> dict[str, dict[str, float]]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT s.study_instance_uid, s.modality, e.kind, e.at, e.detail FROM study_events e JOIN studies s ON s.id = e.study_id"
    ).fetchall()
    out: dict[str, dict[str, float]] = {}
    for uid, modality, kind, at, detail in rows:
        entry = out.setdefault(uid, {"modality": modality})
        entry[kind] = datetime.fromisoformat(str(at)).timestamp()
        if kind == "complete":
            entry["last_instance"] = datetime.fromisoformat(json.loads(detail)["last_instance_at"]).timestamp()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--studies", type=int, default=10, help="DX and MG studies each")
    parser.add_argument("--ct-studies", type=int, default=3)
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument("--quiet", type=float, default=2.0, help="quiet period in seconds (reported separately)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="medscreen-ttr-"))
    studies = build_studies(args.data, work / "studies", args.studies, args.ct_studies, args.ct_slices)
    pacs_port, port = free_port(), free_port()
    (work / "pacs").mkdir()
    pacs = subprocess.Popen([dcmtk("storescp"), "--fork", "-od", str(work / "pacs"), "-aet", "PACS", str(pacs_port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home = work / "var"
    env = {**ENV, "MEDSCREEN_HOME": str(home), "MEDSCREEN_HTTP_PORT": str(free_port()), "MEDSCREEN_DICOM_PORT": str(port),
           "MEDSCREEN_QUIET_PERIOD_S": str(args.quiet), "MEDSCREEN_COMPLETENESS_POLL_S": "0.1", "MEDSCREEN_SCORING_POLL_S": "0.1",
           "MEDSCREEN_PACS_AE_TITLE": "PACS", "MEDSCREEN_PACS_HOST": "127.0.0.1", "MEDSCREEN_PACS_PORT": str(pacs_port),
           "MEDSCREEN_LOG_LEVEL": "WARNING",
           # The shipped mammography and CT versions are `shadow`, whose results a site does not send by default;
           # the path to the PACS is what is timed here, so they are sent.
           "MEDSCREEN_WRITEBACK_SHADOW": "true"}
    # Write-back goes to storescp; the C-FIND count signal is not used (storescp has no query service).
    service = subprocess.Popen([sys.executable, "-m", "medscreen", "serve"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _echo(port, "MEDSCREEN") and _echo(pacs_port, "PACS"), 180, "medscreen and the PACS")
        time.sleep(3)  # the scoring worker loads its models
        for modality in ("DX", "MG", "CT"):
            for files in studies[modality]:
                subprocess.run([dcmtk("storescu"), "-aec", "MEDSCREEN", "127.0.0.1", str(port), *map(str, files)], env=ENV,
                               check=True, capture_output=True)
                time.sleep(args.quiet + 1.0)  # one study at a time: the figures are latencies, not queueing
        total = sum(len(v) for v in studies.values())

        def finished() -> int:
            return sum(1 for t in timeline(home / "medscreen.db").values()
                       if "written-back" in t or "could_not_score" in t or "dead-letter" in t)

        try:
            wait_for(lambda: finished() >= total, 300, "results")
        except AssertionError:
            con = sqlite3.connect(home / "medscreen.db")
            print("not finished:", con.execute("SELECT modality, status, count(*) FROM studies GROUP BY 1, 2").fetchall(),
                  con.execute("SELECT state, last_error FROM scoring_jobs WHERE state != 'done'").fetchall())
        times = timeline(home / "medscreen.db")
    finally:
        os.killpg(service.pid, 15)
        pacs.terminate()
        service.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'modality':<9}{'n':>4}{'quiet->complete p50':>22}{'complete->stored p50/p95':>28}"
          f"{'last instance->written back p50/p95 (excl. quiet)':>52}")
    for modality in ("DX", "MG", "CT"):
        rows = [t for t in times.values() if t["modality"] == modality and "complete" in t]
        if not rows:
            continue
        quiet = [t["complete"] - t["last_instance"] for t in rows]
        stored = [t.get("scored", t.get("could_not_score", np.nan)) - t["complete"] for t in rows]
        written = [t.get("written-back", np.nan) - t["complete"] for t in rows]
        def pct(values: list[float], q: float) -> str:
            arr = np.asarray(values, dtype=float)
            return "n/a" if np.all(np.isnan(arr)) else f"{np.nanpercentile(arr, q):.2f}"
        print(f"{modality:<9}{len(rows):>4}{pct(quiet, 50):>22}{pct(stored, 50) + ' / ' + pct(stored, 95):>28}"
              f"{pct(written, 50) + ' / ' + pct(written, 95):>52}")
        failed = [t for t in rows if "could_not_score" in t]
        if failed:
            print(f"   {len(failed)} {modality} studies could not be scored (see their timeline)")
    print("(seconds; 'excl. quiet' = from the moment the study became complete; the quiet period is the second column)")


if __name__ == "__main__":
    main()
