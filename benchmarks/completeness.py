"""Completeness delay: time from a study's last instance to "complete", by quiet period and by the PACS count.

    python benchmarks/completeness.py [--data ../shared/data] [--studies 5] [--instances 50] [--quiet 10]

A real Orthanc holds each CT study (copies of a real LIDC slice with new UIDs) and sends it to a running
medscreen with C-STORE; medscreen asks Orthanc by C-FIND how many instances the study has. Two runs: with
the count signal (MEDSCREEN_PACS_*) and with the quiet period alone. Prints the delay per study and its median.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.study_factory import write_ct_study  # noqa: E402
from tests.peers import MedscreenService, start_orthanc, stop_orthanc, wait_for  # noqa: E402
from tests.ports import free_port  # noqa: E402


def run(work: Path, files_per_study: list[list[Path]], quiet: float, with_count: bool) -> list[float]:
    import os

    orthanc = start_orthanc(work / ("orthanc-count" if with_count else "orthanc-quiet"))
    home = work / ("count" if with_count else "quiet") / "var"
    home.parent.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    http_port, dicom_port = free_port(), free_port()
    env.update(MEDSCREEN_HOME=str(home), MEDSCREEN_HTTP_PORT=str(http_port), MEDSCREEN_DICOM_PORT=str(dicom_port),
               MEDSCREEN_QUIET_PERIOD_S=str(quiet), MEDSCREEN_COMPLETENESS_POLL_S="0.2", MEDSCREEN_LOG_LEVEL="WARNING",
               MEDSCREEN_SCORING_WORKERS="1")
    if with_count:
        env.update(MEDSCREEN_PACS_AE_TITLE="ORTHANC", MEDSCREEN_PACS_HOST="127.0.0.1",
                   MEDSCREEN_PACS_PORT=str(orthanc.dicom_port), MEDSCREEN_WRITEBACK="false")
    service = MedscreenService(env, home, http_port, dicom_port)
    try:
        service.start()
        orthanc.client.put("/modalities/medscreen", json={"AET": "MEDSCREEN", "Host": "127.0.0.1", "Port": dicom_port})
        for files in files_per_study:
            orthanc.store_to("medscreen", orthanc.upload(files))
        db = home / "medscreen.db"

        def delays() -> list[float] | None:
            rows = sqlite3.connect(db).execute("SELECT detail FROM study_events WHERE kind = 'complete'").fetchall()
            found = [json.loads(r[0])["delay_after_last_instance_s"] for r in rows]
            return found if len(found) >= len(files_per_study) else None

        return wait_for(delays, quiet * 3 + 60, "every study complete")
    finally:
        service.stop()
        stop_orthanc(orthanc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--quiet", type=float, default=10.0)
    args = parser.parse_args()
    slices = sorted((args.data / "ct" / "lidc").rglob("*.dcm")) or sorted((REPO / "tests/fixtures/inference/ct").glob("*.dcm"))
    work = Path(tempfile.mkdtemp(prefix="medscreen-completeness-"))
    studies = [write_ct_study(slices[0], work / f"study{i}", args.instances) for i in range(args.studies)]
    for with_count in (True, False):
        delays = run(work, studies, args.quiet, with_count)
        label = "PACS count (C-FIND to Orthanc)" if with_count else f"quiet period {args.quiet:.0f} s alone"
        print(f"{label:<34} delay after the last instance: median {statistics.median(delays):.2f} s, "
              f"max {max(delays):.2f} s over {len(delays)} studies of {args.instances} instances")


if __name__ == "__main__":
    main()
