"""A series belongs to its study: a SeriesInstanceUID reused by another study gets that study its own series.

Series were unique by UID alone, so a second study (another patient) reusing a series UID had its instance
filed under the first study's series; it had no series, was routed "not applicable: the study has no series"
and never scored (review defect 7). SQLite and a real PostgreSQL, the migration included.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select, text

from inference.complete import CompletenessMonitor
from inference.receive.process import build_ingestor
from inference.route import load_rules
from inference.tables import Instance, Series, Study
from medscreen.schema import alembic_config_all, migrate_all
from service.db import make_engine, make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
BEFORE = "0005_inference_writeback_node"


def _two_patients_one_series_uid(folder: Path) -> list[Path]:
    shared_series = generate_uid()
    paths = []
    for patient in ("A", "B"):
        ds = dcmread(DX_CHEST)
        ds.PatientName, ds.PatientID = f"PATIENT^{patient}", patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), shared_series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        paths.append(folder / f"{patient}.dcm")
        ds.save_as(paths[-1])
    return paths


def test_a_series_uid_reused_by_another_study_is_that_studys_own_series(
    service_settings: Settings, tmp_path: Path
) -> None:
    settings = service_settings.model_copy(update={"quiet_period_s": 0.0})
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    ingestor = build_ingestor(settings)
    try:
        for path in _two_patients_one_series_uid(tmp_path):
            received = ingestor.spool.new_incoming_path()
            received.write_bytes(path.read_bytes())
            ingestor.accept_file(received, source="dimse")
        factory = make_session_factory(ingestor.engine)
        CompletenessMonitor(settings, factory, load_rules()).run_once()
        with factory() as session:
            studies = session.scalars(select(Study).order_by(Study.id)).all()
            assert [(s.status, s.task, s.instance_count) for s in studies] == [("routed", "chest-xray", 1)] * 2
            for study in studies:
                series = session.scalars(select(Series).where(Series.study_id == study.id)).one()
                instance = session.scalars(select(Instance).where(Instance.study_id == study.id)).one()
                assert (series.instance_count, instance.series_id) == (1, series.id)
    finally:
        ingestor.engine.dispose()


def test_the_migration_keeps_existing_series_and_lets_two_studies_share_a_uid(database_url: str) -> None:
    migrate_all(database_url)
    config = alembic_config_all(database_url)
    command.downgrade(config, BEFORE)
    engine = make_engine(database_url)
    insert_study = text(
        "INSERT INTO studies (study_instance_uid, status, revision, modality, instance_count, study_description,"
        " accession_number, study_date, patient_id, patient_name, patient_sex, patient_birth_date,"
        " institution_name, first_received_at, last_received_at)"
        " VALUES (:uid, 'receiving', 1, 'DX', 1, '', '', '', '', '', '', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    insert_series = text(
        "INSERT INTO series (study_id, series_instance_uid, modality, instance_count, headers)"
        " VALUES ((SELECT id FROM studies WHERE study_instance_uid = :study), '1.2.3', 'DX', 1, '{}')"
    )
    try:
        with engine.begin() as connection:
            connection.execute(insert_study, {"uid": "1.2.1"})
            connection.execute(insert_series, {"study": "1.2.1"})
        command.upgrade(config, "heads")
        with engine.begin() as connection:
            connection.execute(insert_study, {"uid": "1.2.2"})
            connection.execute(insert_series, {"study": "1.2.2"})
            rows = connection.execute(text("SELECT study_id, series_instance_uid FROM series ORDER BY id")).all()
        assert [uid for _, uid in rows] == ["1.2.3", "1.2.3"] and rows[0][0] != rows[1][0]
    finally:
        engine.dispose()
