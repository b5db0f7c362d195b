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


# What a receiver, a scoring worker, the FHIR feeds and the HTTP side log, in a process configured at DEBUG as an
# operator sets MEDSCREEN_LOG_LEVEL=DEBUG: the identity-bearing libraries' own code, the real access-log call.
_AT_DEBUG = """
import logging, sys, warnings
from pathlib import Path
import httpx
import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from medscreen.logging_config import configure_logging
from inference.instance_headers import read_instance_headers
from inference.scorers import TaskScore
from inference.writeback import ResultToWrite, build_sr

configure_logging("DEBUG")
source, work = Path(sys.argv[1]), Path(sys.argv[2])
ds = dcmread(source)
ds.PatientName, ds.PatientID, ds.AccessionNumber = "Leakname^Secret", "PIDLEAK4242", "ACCLEAK77"
received = dcmread(source)
received["PatientBirthDate"] = DataElement(0x00100030, "DA", "03.12.2019")  # a German modality's date: not DICOM's
received.save_as(work / "received.dcm")
read_instance_headers(work / "received.dcm")  # pydicom warns, quoting the value
scored = TaskScore(0.72, {"kind": "heatmap", "point": [40.0, 60.0]}, ds, np.linspace(0, 1, 64).reshape(8, 8), np.full((64, 64), 0.5))
build_sr(ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, None),
         series_instance_uid="1.2.826.0.1.3680043.8.498.77.1")  # highdicom names the source's UIDs
emr = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})))
emr.get("http://emr.invalid/fhir/Patient/case-leak-7")  # httpx logs each request's URL
access = logging.getLogger("uvicorn.access")
for target in (f"/api/worklist/{ds.StudyInstanceUID}", "/api/worklist/ACCLEAK77", "/fhir/RiskAssessment/case-leak-7",
               "/api/studies/PIDLEAK4242/rescore", "/fhir/RiskAssessment?subject=Patient/case-leak-7"):
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", target, "1.1", 200)
logging.getLogger("inference.ingest").debug("medscreen's own debug line")
"""


def test_at_debug_the_log_names_no_patient_and_no_study(tmp_path) -> None:
    """MEDSCREEN_LOG_LEVEL=DEBUG had skipped every redaction: the access log wrote paths and queries in clear,
    pynetdicom and highdicom wrote UIDs, httpx the EMR's Patient URLs, pydicom quoted header values."""
    import subprocess
    import sys

    from pydicom import dcmread

    from tests.inference.conftest import INFERENCE_FIXTURES

    source = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
    header = dcmread(source, stop_before_pixels=True)
    done = subprocess.run([sys.executable, "-c", _AT_DEBUG, str(source), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "DEBUG MainProcess inference.ingest: medscreen's own debug line" in done.stderr, "DEBUG is on for medscreen"
    assert "/api/worklist/uid:" in done.stderr and "/fhir/RiskAssessment?subject=Patient/" in done.stderr
    for value in ("Leakname", "PIDLEAK4242", "ACCLEAK77", "03.12.2019", "case-leak-7", header.StudyInstanceUID,
                  header.SOPInstanceUID, header.SeriesInstanceUID):
        assert value not in done.stderr, value


def test_access_log_paths_keep_route_words_and_digest_every_other_segment() -> None:
    from medscreen.logging_config import redact_request_target
    from service.audit import subject_digest

    assert redact_request_target("/api/worklist/ACC123/claim") == f"/api/worklist/{subject_digest('ACC123')}/claim"
    assert redact_request_target(f"/api/studies/{STUDY}") == f"/api/studies/uid:{subject_digest(STUDY)}"
    assert redact_request_target("/fhir/RiskAssessment/case%207") == f"/fhir/RiskAssessment/{subject_digest('case 7')}"
    assert "2256329130905364" not in redact_request_target("/api/patients/2256329130905364"), "a path no route has"
    # What medscreen makes itself names no one: row numbers where a route takes one, its FHIR ids, the pages' files.
    for plain in ("/api/jobs/17/replay", "/api/outbox/3/replay", "/api/screening/flags/12/outcome",
                  "/fhir/RiskAssessment/medscreen-ra-12", "/fhir/Observation/medscreen-obs-4-call",
                  "/worklist/static/worklist.js", "/docs", "/healthz", "/api/worklist?claimed=mine&limit=50", "/"):
        assert redact_request_target(plain) == plain
    assert "rita" not in redact_request_target("/api/auth/unlock/rita")
    assert redact_request_target("/api/studies?patient=PID9&limit=5") == f"/api/studies?patient={subject_digest('PID9')}&limit=5"


def test_the_plain_path_segments_are_the_words_of_the_apps_routes(tmp_path) -> None:
    """A route added with a new word would have that word logged as a digest; a word no route has left in the set."""
    import re

    from medscreen.app import create_app
    from medscreen.logging_config import PLAIN_PATH_SEGMENTS
    from service.settings import Settings

    app = create_app(Settings(home=tmp_path / "var"))
    paths = set()
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        paths.update(context.path for context in contexts)
    app.state.engine.dispose()
    assert "/api/worklist/{study_uid}/claim" in paths
    words = {segment for path in paths for segment in path.split("/") if segment and not re.fullmatch(r"\{.*\}", segment)}
    assert words == PLAIN_PATH_SEGMENTS
