"""Logs carry digests only: no study UID in access-log paths, no raw header bytes from pydicom."""

from __future__ import annotations

import logging
import warnings

from medscreen.logging_config import configure_logging, uid_digests

STUDY = "1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329"


def test_uids_in_access_log_paths_become_digests(caplog) -> None:
    configure_logging("INFO")
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/api/studies/{STUDY}", "1.1", 200)
    assert STUDY not in caplog.text and "uid:" in caplog.text
    assert uid_digests("version 1.2 of 3") == "version 1.2 of 3", "short dotted numbers are not UIDs"



def _access_line(caplog, path: str, query: bytes) -> str:
    # The call uvicorn's HTTP protocol makes for each answer (log_config=None: through configure_logging).
    from uvicorn.protocols.utils import get_path_with_query_string

    full_path = get_path_with_query_string(  # raw_path: uvicorn 0.55 builds the line from it
        {"type": "http", "root_path": "", "path": path, "raw_path": path.encode(), "query_string": query}
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", full_path, "1.1", 200
        )
    return caplog.text


def test_patient_and_study_ids_in_query_strings_become_digests(caplog) -> None:
    from service.audit import subject_digest

    configure_logging("INFO")
    line = _access_line(caplog, "/fhir/RiskAssessment", b"subject=Patient/case-sim-2")
    assert "case-sim-2" not in line
    assert f"subject=Patient/{subject_digest('case-sim-2')}" in line, "the same digest as the audit line's subject"
    line = _access_line(caplog, "/fhir/RiskAssessment", b"subject=Patient%2FPIDLEAK9876")
    assert "PIDLEAK9876" not in line and subject_digest("PIDLEAK9876") in line
    line = _access_line(caplog, "/api/audit", b"subject_id=PIDLEAK9876&subject_type=patient&limit=20")
    assert "PIDLEAK9876" not in line
    assert f"subject_id={subject_digest('PIDLEAK9876')}&subject_type=patient&limit=20" in line
    line = _access_line(caplog, "/fhir/DiagnosticReport", f"study=urn:oid:{STUDY}".encode())
    assert STUDY not in line
    # FHIR search parameters no route reads, and a bare value, are digested all the same.
    line = _access_line(caplog, "/fhir/RiskAssessment", b"patient=MRN77&identifier=urn:mrn|MRN77&_id=MRN77&MRN77")
    assert "MRN77" not in line
    line = _access_line(caplog, "/api/worklist/priority-changes", f"study_uid={STUDY}&offset=0".encode())
    assert STUDY not in line and "offset=0" in line
    line = _access_line(caplog, "/api/studies", b"status=routed&modality=DX&limit=50")
    assert "?status=routed&modality=DX&limit=50" in line, "filters that name no one stay readable"

def test_pydicom_warnings_with_raw_bytes_stay_out_of_the_log(caplog) -> None:
    configure_logging("INFO")
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("ignore", module=r"pydicom(\\.|$)")
        logging.getLogger("pydicom").warning("Invalid value for VR PN: 'Doe^Jane'")
    assert "Doe^Jane" not in caplog.text
    assert logging.getLogger("pydicom").getEffectiveLevel() >= logging.ERROR
    assert not caught


def test_building_the_sr_and_heatmap_logs_no_source_uid(caplog) -> None:
    # highdicom logs the source image's UIDs at INFO ("copy Patient-related attributes from dataset 1.2...")
    # for every document it builds: a served log would name each study scored.
    import numpy as np
    from pydicom import dcmread

    from inference.scorers import TaskScore
    from inference.writeback import ResultToWrite, build_heatmap, build_sr
    from tests.inference.conftest import INFERENCE_FIXTURES

    configure_logging("INFO")
    source = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    scored = TaskScore(0.72, {"kind": "heatmap", "point": [40.0, 60.0]}, source, np.linspace(0, 1, 64).reshape(8, 8), np.full((64, 64), 0.5))
    result = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, None)
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_sr(result, series_instance_uid="1.2.826.0.1.3680043.8.498.77.1")
        build_heatmap(result, series_instance_uid="1.2.826.0.1.3680043.8.498.77.2")
    for uid in (source.SOPInstanceUID, source.StudyInstanceUID, source.SeriesInstanceUID):
        assert str(uid) not in caplog.text


# A failed write logged as uvicorn logs an unhandled request error: the row's values (a child's name and record
# number, a study UID) must not reach stderr, whether the engine or the log format stops them.
_FAILED_WRITE = """
import logging, sys
from sqlalchemy import create_engine, text
from medscreen.logging_config import configure_logging
from service.db import make_engine

configure_logging("INFO")
url, which, study = sys.argv[1:4]
engine = make_engine(url) if which == "product" else create_engine(url)
row = {"mrn": "MRNLEAK2", "name": "Secretname Lockleak", "study": study}
with engine.begin() as connection:
    connection.execute(text("CREATE TABLE children (mrn TEXT PRIMARY KEY, name TEXT, study TEXT)"))
    connection.execute(text("INSERT INTO children VALUES (:mrn, :name, :study)"), row)
try:
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO children VALUES (:mrn, :name, :study)"), row)
except Exception as exc:
    logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("inference.score_job").error("write failed: %s", exc)
"""


def _failed_write_log(tmp_path, which: str) -> str:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / which}.db"
    done = subprocess.run([sys.executable, "-c", _FAILED_WRITE, url, which, STUDY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "IntegrityError" in done.stderr and "Exception in ASGI application" in done.stderr
    return done.stderr


def test_a_failed_write_logs_no_row_values_through_the_product_engine(tmp_path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from service.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE children (mrn TEXT PRIMARY KEY)"))
        connection.execute(text("INSERT INTO children VALUES (:mrn)"), {"mrn": "MRNLEAK2"})
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO children VALUES (:mrn)"), {"mrn": "MRNLEAK2"})
    except IntegrityError as exc:
        assert "MRNLEAK2" not in str(exc) and "parameters hidden" in str(exc)
    else:
        raise AssertionError("the duplicate row was written")
    stderr = _failed_write_log(tmp_path, "product")
    for value in ("MRNLEAK2", "Secretname Lockleak", STUDY):
        assert value not in stderr


def test_the_log_format_drops_sql_parameters_an_engine_left_in(tmp_path) -> None:
    # An engine made without hide_parameters (a library's, a script's): the log format still drops the values.
    stderr = _failed_write_log(tmp_path, "plain")
    assert "[SQL parameters hidden]" in stderr
    for value in ("MRNLEAK2", "Secretname Lockleak", STUDY):
        assert value not in stderr


def test_a_postgresql_detail_line_is_dropped_from_tracebacks(caplog) -> None:
    # psycopg's unique-violation text: "DETAIL:  Key (patient_id)=(...) already exists." quotes the row.
    configure_logging("INFO")
    driver_text = 'duplicate key value violates unique constraint "ix"\nDETAIL:  Key (patient_id)=(MRNLEAK2) already exists.'
    try:
        raise RuntimeError(driver_text)
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    assert "MRNLEAK2" not in "".join(h.format(r) for h in logging.getLogger().handlers for r in caplog.records)


def test_log_lines_are_stamped_in_utc_and_say_so() -> None:
    """A site's journal is read in its own zone: the UTC time of every line carries its Z."""
    import os
    import re
    import subprocess
    import sys
    from datetime import UTC, datetime

    program = (
        "import logging; from medscreen.logging_config import configure_logging; "
        "configure_logging('INFO'); logging.getLogger('medscreen.test').info('stamped')"
    )
    env = {**os.environ, "TZ": "America/New_York"}
    before = datetime.now(UTC).replace(microsecond=0)
    line = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True).stderr
    match = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.\d{3}Z INFO MainProcess medscreen.test: stamped$", line.strip())
    assert match is not None, line
    stamped = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
    assert abs((stamped - before).total_seconds()) < 60, "the stamp is the UTC time, not New York's"
