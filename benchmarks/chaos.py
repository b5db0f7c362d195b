"""Chaos: kill -9 the service, a receiver or a scoring worker during a multi-association send.

    python benchmarks/chaos.py [--rounds 3] [--studies 3] [--instances 40] [--associations 3]

Each round sends fresh CT studies over several storescu associations at once to a real `medscreen serve`,
kills one target with SIGKILL in the middle (round 1: the whole service, 2: a receiver process, 3: a scoring
worker, then again in turn), restarts the service if it was the one killed (the supervisor restarts
receivers and workers on its own), and waits for every study to reach a final status. Prints, per round,
instances acknowledged to the senders vs present in the database, and the time from the end of the send
to the last study's final status.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydicom import dcmread  # noqa: E402

from benchmarks.dcmtk import dcmtk  # noqa: E402
from benchmarks.study_factory import write_ct_study  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402
from tests.peers import MedscreenService, wait_for  # noqa: E402
from tests.ports import free_port  # noqa: E402

FINAL = {"scored", "could_not_score", "not_applicable", "failed"}
TARGETS = ("service", "receiver", "worker")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _pids_in(out: str) -> set[int]:
    return {int(chunk.split(",")[0]) for chunk in out.split("pid=")[1:]}


def target_pid(service: MedscreenService, target: str) -> int | None:
    assert service.process is not None
    main = service.process.pid
    if target == "service":
        return main
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{service.dicom_port}"], capture_output=True, text=True).stdout
    receivers = _pids_in(out) - {main}
    if target == "receiver":
        return min(receivers) if receivers else None
    workers = []
    for pid in _children(main):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline and pid not in receivers and b"resource_tracker" not in cmdline:
            workers.append(pid)
    return min(workers) if workers else None


def send(port: int, files: list[Path], associations: int, uid_of: dict[str, str], acknowledged: set[str]) -> None:
    chunks = [files[i::associations] for i in range(associations)]

    def one(chunk: list[Path]) -> None:
        sender = subprocess.Popen(
            [dcmtk("storescu"), "-v", "-aec", "MEDSCREEN", "127.0.0.1", str(port), *map(str, chunk)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        assert sender.stdout is not None
        current = None
        for line in sender.stdout:
            if line.startswith("I: Sending file: "):
                current = line.removeprefix("I: Sending file: ").strip()
            elif "Received Store Response (Success)" in line and current:
                acknowledged.add(uid_of[current])
        sender.wait()

    threads = [threading.Thread(target=one, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_round(
    service: MedscreenService, work: Path, round_no: int, target: str, args: argparse.Namespace, rng: random.Random
) -> tuple[int, int, int, int, str]:
    """One round: send, kill ``target`` mid-send, recover; (acknowledged, present, lost, studies, seconds to final)."""
    source = FIXTURES / "inference" / "ct" / "lidc-0002-0.dcm"
    home = service.home
    files = [p for s in range(args.studies) for p in write_ct_study(source, work / f"r{round_no}s{s}", args.instances)]
    uid_of = {str(p): str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    study_uids = {str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files}
    acknowledged: set[str] = set()
    sending = threading.Thread(target=send, args=(service.dicom_port, files, args.associations, uid_of, acknowledged))
    sending.start()
    kill_at = rng.uniform(0.3, 0.6) * len(files)
    wait_for(lambda: len(acknowledged) >= kill_at or not sending.is_alive(), 300, "the send to get going", 0.05)
    pid = target_pid(service, target)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    sending.join()
    send_done = time.monotonic()
    if target == "service":
        assert service.process is not None
        service.process.wait(timeout=30)
        wait_for(lambda: not service.dicom_ready(), 30, "the receivers to die with the service")
        service.start(timeout=300)
        send(service.dicom_port, files, args.associations, uid_of, acknowledged)  # the PACS sends again
    db = sqlite3.connect(home / "medscreen.db")
    present = {row[0] for row in db.execute("SELECT sop_instance_uid FROM instances")}
    lost = len(acknowledged - present)
    placeholders = ",".join("?" * len(study_uids))
    query = f"SELECT status FROM studies WHERE study_instance_uid IN ({placeholders})"

    def all_final() -> bool:
        rows = db.execute(query, sorted(study_uids)).fetchall()
        return len(rows) == len(study_uids) and all(status in FINAL for (status,) in rows)

    try:
        wait_for(all_final, 1800, "every study to reach a final status", 0.5)
        final_after = f"{time.monotonic() - send_done:.1f}"
    except AssertionError:
        final_after = "timeout"
    db.close()
    return len(acknowledged), len(present & set(uid_of.values())), lost, len(study_uids), final_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--associations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="medscreen-chaos-"))
    home = work / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    env.update(
        MEDSCREEN_HOME=str(home), MEDSCREEN_HTTP_PORT=str(free_port()), MEDSCREEN_DICOM_PORT=str(free_port()),
        MEDSCREEN_MIN_FREE_DISK_MB="1", MEDSCREEN_COMPLETENESS_POLL_S="0.2", MEDSCREEN_QUIET_PERIOD_S="3",
        MEDSCREEN_SCORING_LEASE_S="600", PYTHONPATH=str(REPO),
    )
    service = MedscreenService(env, home, int(env["MEDSCREEN_HTTP_PORT"]), int(env["MEDSCREEN_DICOM_PORT"]))
    home.parent.mkdir(parents=True, exist_ok=True)
    service.start(timeout=300)
    print(f"{'round':>5} {'killed':>8} {'acknowledged':>12} {'present':>8} {'lost':>5} {'studies':>7} {'final after (s)':>15}")
    total_ack = total_lost = 0
    for round_no in range(1, args.rounds + 1):
        target = TARGETS[(round_no - 1) % len(TARGETS)]
        acknowledged, present, lost, studies, final_after = run_round(service, work, round_no, target, args, rng)
        total_ack += acknowledged
        total_lost += lost
        print(f"{round_no:>5} {target:>8} {acknowledged:>12} {present:>8} {lost:>5} {studies:>7} {final_after:>15}", flush=True)
    service.stop()
    print(f"total: {total_ack} acknowledged, {total_lost} lost")


if __name__ == "__main__":
    main()
