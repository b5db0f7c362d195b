"""Throughput of the integration paths: HL7 messages to a RIS over MLLP, and a backfill from the PACS.

    python benchmarks/integration_feeds.py [--messages 500] [--slices 200] [--studies 3]

RIS: ``--messages`` ORU^R01 built (hl7apy) and stored in the outbox, then sent one connection each to hl7apy's
MLLP server, which parses every message strictly and answers AA. Prints build and send rates.
Backfill: ``--studies`` CT studies of ``--slices`` copies of a real LIDC slice in a real Orthanc, pulled by
``medscreen backfill`` (C-FIND, C-GET into the ingest path, fsync and database per instance). Prints instances/s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.study_factory import write_ct_study  # noqa: E402
from tests.peers import start_orthanc, stop_orthanc  # noqa: E402
from tests.ports import free_port  # noqa: E402


def ris(work: Path, messages: int) -> None:
    from medscreen.schema import migrate_all
    from service.db import make_engine, make_session_factory, session_scope, utcnow
    from service.outbox import RetryPolicy, add_message, dispatch
    from tests.worklist.ris_peer import RisListener
    from worklist.hl7_messages import ChampionResult, Hl7Endpoint, StudyOrder, result_report
    from worklist.ris_feed import CHANNEL, RisSender

    url = f"sqlite:///{work / 'ris.db'}"
    migrate_all(url)
    factory = make_session_factory(make_engine(url, serialise_writes=True))
    endpoint = Hl7Endpoint("MEDSCREEN", "RADIOLOGY", "RIS", "RADIOLOGY")
    started = time.perf_counter()
    with session_scope(factory) as session:
        for i in range(messages):
            order = StudyOrder(f"1.2.3.{i}", f"ACC{i:08d}", f"P{i}", "Doe^Jane", "DX", "XR CHEST 1 VIEW")
            result = ChampionResult(i, "chest-xray", "chest-xray", "3", "scored", 0.5 + i % 50 / 100, 0.6, "negative",
                                    None, utcnow())
            payload = result_report(endpoint, order, result, control_id=f"MSR{i}", at=utcnow())
            add_message(session, CHANNEL, f"MSR{i}", f"ORU^R01 MSR{i}", payload, "application/hl7-v2", utcnow())
    built = time.perf_counter() - started
    listener = RisListener("127.0.0.1", free_port())
    listener.start()
    try:
        started = time.perf_counter()
        sent = dispatch(factory, CHANNEL, RisSender(listener.host, listener.port, 10), RetryPolicy(1, 3), limit=messages)
        elapsed = time.perf_counter() - started
    finally:
        listener.stop()
    assert sent == messages == len(listener.accepted()), (sent, len(listener.accepted()))
    print(f"RIS: {messages} ORU^R01 built and stored in {built:.2f} s ({messages / built:.0f}/s); "
          f"sent and acknowledged in {elapsed:.2f} s ({messages / elapsed:.0f} messages/s, "
          f"{1000 * elapsed / messages:.1f} ms each incl. the strict parse at the listener and a commit per ACK)")


def backfill(work: Path, studies: int, slices: int, source: Path) -> None:
    orthanc = start_orthanc(work / "orthanc", modalities={"medscreen": ["MEDSCREEN", "127.0.0.1", free_port()]})
    try:
        files = []
        for i in range(studies):
            files += write_ct_study(source, work / f"ct{i}", slices)
        for path in files:  # dated today so that --since finds them
            from pydicom import dcmread

            ds = dcmread(path)
            ds.StudyDate = datetime.now(UTC).strftime("%Y%m%d")
            ds.save_as(path, enforce_file_format=True)
        orthanc.upload(files)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
        env.update(MEDSCREEN_HOME=str(work / "var"), MEDSCREEN_PACS_AE_TITLE="ORTHANC", MEDSCREEN_PACS_HOST="127.0.0.1",
                   MEDSCREEN_PACS_PORT=str(orthanc.dicom_port), MEDSCREEN_MIN_FREE_DISK_MB="1", MEDSCREEN_LOG_LEVEL="WARNING")
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "medscreen", "--create-home", "backfill", "--since", datetime.now(UTC).date().isoformat(), "-q"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=3600,
        )
        elapsed = time.perf_counter() - started
        stored = re.search(r"\((\d+) instances stored", result.stderr)
        assert result.returncode == 0 and stored, result.stderr
        count = int(stored.group(1))
        print(f"backfill: {studies} studies, {count} instances in {elapsed:.1f} s including start-up and the C-FIND "
              f"({count / elapsed:.0f} instances/s; each spooled with fsync and recorded before the next)")
    finally:
        stop_orthanc(orthanc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ris(work, args.messages)
        backfill(work, args.studies, args.slices, REPO / "tests" / "fixtures" / "inference" / "ct" / "lidc-0002-0.dcm")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
