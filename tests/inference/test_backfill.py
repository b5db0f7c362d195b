"""`medscreen backfill` against a real Orthanc holding real studies: C-FIND by date and modality, C-GET into
the normal ingest path, studies already held skipped, medscreen's own output dropped, an interrupted run
(kill -9) resumed without retrieving finished studies again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from benchmarks.study_factory import wrap_mammogram, wrap_radiograph
from inference.ingest import InstanceIngestor
from tests.conftest import FIXTURES, REPO, free_port
from tests.peers import Orthanc, start_orthanc, stop_orthanc, wait_for

pytestmark = [pytest.mark.integration]
KERMANY = FIXTURES / "datasets" / "kermany" / "train"
MIAS = FIXTURES / "datasets" / "mias"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    # Orthanc answers C-FIND/C-GET for AEs it knows; the README's configuration registers medscreen the same way.
    pacs = start_orthanc(tmp_path / "orthanc", modalities={"medscreen": ["MEDSCREEN", "127.0.0.1", free_port()]})
    yield pacs
    stop_orthanc(pacs)


def _start_backfill(home: Path, orthanc: Orthanc, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    env.update(MEDSCREEN_HOME=str(home), MEDSCREEN_PACS_AE_TITLE="ORTHANC", MEDSCREEN_PACS_HOST="127.0.0.1",
               MEDSCREEN_PACS_PORT=str(orthanc.dicom_port), MEDSCREEN_MIN_FREE_DISK_MB="1")
    return subprocess.Popen([sys.executable, "-m", "medscreen", "backfill", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _backfill(home: Path, orthanc: Orthanc, *args: str) -> subprocess.CompletedProcess[str]:
    process = _start_backfill(home, orthanc, *args)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _db(home: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(home / "medscreen.db") as db:
        return db.execute(sql).fetchall()


def test_backfill_pulls_missing_studies_once_and_resumes(
    tmp_path: Path, orthanc: Orthanc, ingestor: InstanceIngestor, incoming_copy
) -> None:  # type: ignore[no-untyped-def]
    today = datetime.now(UTC).date().isoformat()
    dx = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm", patient_id="P1")
    # medscreen's own heat-map, written back into the radiograph's study: must never come back in.
    own = dcmread(dx)
    own.Manufacturer = "medscreen"
    own.SeriesInstanceUID, own.SOPInstanceUID = generate_uid(), generate_uid()
    own.file_meta.MediaStorageSOPInstanceUID = own.SOPInstanceUID
    own.save_as(tmp_path / "own.dcm", enforce_file_format=True)
    mg_uid = str(generate_uid())
    mg = [wrap_mammogram(MIAS / f"mdb00{i}.png", tmp_path / f"mg{i}.dcm", laterality=side, study_uid=mg_uid,
                         patient_id="P2") for i, side in ((1, "L"), (2, "R"))]
    more_dx = [wrap_radiograph(KERMANY / "NORMAL" / name, tmp_path / f"{name}.dcm", patient_id=f"P{3 + i}")
               for i, name in enumerate(["IM-0115-0001.jpeg", "IM-0117-0001.jpeg"])]
    ct = sorted((FIXTURES / "inference" / "ct").glob("*.dcm"))  # dated 2000: outside --since
    orthanc.upload([dx, tmp_path / "own.dcm", *mg, *more_dx, *ct])
    # The mammogram study was pushed (and so scored) before: the backfill must leave it alone.
    ingestor.accept_file(incoming_copy(mg[0]), source="dimse", calling_ae="ORTHANC")
    home = ingestor.settings.home

    listed = _backfill(home, orthanc, "--since", today, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 4 and "4 studies at ORTHANC" in listed.stderr

    only_mg = _backfill(home, orthanc, "--since", today, "--modality", "MG", "-q")
    assert only_mg.returncode == 0, only_mg.stderr
    assert "1 found, 1 already held (skipped), 0 retrieved" in only_mg.stderr
    assert _db(home, f"SELECT instance_count, revision FROM studies WHERE study_instance_uid = '{mg_uid}'") == [(1, 1)]

    # Interrupted: rate-limited to one study a minute, killed after the first study is finished.
    slow = _start_backfill(home, orthanc, "--since", today, "--modality", "DX", "--rate", "1", "-q")
    wait_for(lambda: _db(home, "SELECT count(*) FROM study_events WHERE kind = 'backfilled'")[0][0] == 1, 120,
             "the first study of the slow run to finish")
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    first = _db(home, "SELECT s.study_instance_uid FROM study_events e JOIN studies s ON s.id = e.study_id "
                      "WHERE e.kind = 'backfilled'")[0][0]

    again = _backfill(home, orthanc, "--since", today, "--modality", "DX", "--modality", "MG", "-q")
    assert again.returncode == 0, again.stderr
    # 4 found: MG held since before; the finished DX study skipped; the other two retrieved.
    assert "4 found, 2 already held (skipped), 2 retrieved (2 instances stored" in again.stderr
    held = dict(_db(home, "SELECT study_instance_uid, instance_count FROM studies"))
    assert set(held) == {mg_uid, *(str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in [dx, *more_dx])}
    assert held[str(own.StudyInstanceUID)] == 1  # the radiograph, without medscreen's own output
    assert _db(home, f"SELECT count(*) FROM instances WHERE sop_instance_uid = '{own.SOPInstanceUID}'") == [(0,)]
    assert _db(home, "SELECT count(*) FROM study_events WHERE kind = 'backfilled'") == [(3,)]
    assert all(source == "backfill" for (source,) in _db(home, f"SELECT source FROM instances WHERE study_id IN "
                                                             f"(SELECT id FROM studies WHERE study_instance_uid != '{mg_uid}')"))

    nothing = _backfill(home, orthanc, "--since", today, "-q")
    assert "4 found, 4 already held (skipped), 0 retrieved" in nothing.stderr

    # A run killed in the middle of a study left it without its `backfilled` mark: it is retrieved again,
    # what was already held is acknowledged and stored once, and the study gets no new revision.
    with sqlite3.connect(home / "medscreen.db") as db:
        db.execute("DELETE FROM study_events WHERE kind = 'backfilled' AND study_id = "
                   f"(SELECT id FROM studies WHERE study_instance_uid = '{first}')")
    resumed = _backfill(home, orthanc, "--since", today, "-q")
    assert "4 found, 3 already held (skipped), 1 retrieved (0 instances stored, 1 already held" in resumed.stderr
    assert _db(home, f"SELECT revision FROM studies WHERE study_instance_uid = '{first}'") == [(1,)]
