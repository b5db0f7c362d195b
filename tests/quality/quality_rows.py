"""Writers of the rows quality review reads, stored the way ingest, the scoring worker and the worklist store
them: studies with their series headers, scoring jobs and results, final reads with findings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from inference.tables import Series, Study
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory
from tests.worklist.conftest import add_result
from worklist.tables import FinalRead, FinalReadFinding

__all__ = ["add_study", "add_result", "add_final_read", "quality_db"]


def add_study(
    session: Session,
    *,
    arrived: datetime,
    task: str = "chest-xray",
    modality: str = "CR",
    manufacturer: str = "ACME",
    station: str = "CR1",
    sex: str = "F",
    birth_date: str = "19700101",
    study_date: str = "20260101",
    patient_id: str | None = None,
) -> Study:
    """A study of its own patient unless ``patient_id`` says whose (quality figures cluster a patient's studies)."""
    uid = generate_uid()
    study = Study(
        study_instance_uid=uid,
        status="scored",
        revision=1,
        modality=modality,
        task=task,
        instance_count=1,
        patient_id=patient_id or f"PID-{uid[-20:]}",
        patient_name="Doe^Jane",
        patient_sex=sex,
        patient_birth_date=birth_date,
        study_date=study_date,
        first_received_at=arrived,
        last_received_at=arrived,
        completed_at=arrived + timedelta(seconds=10),
    )
    session.add(study)
    session.flush()
    session.add(
        Series(
            study_id=study.id,
            series_instance_uid=generate_uid(),
            modality=modality,
            instance_count=1,
            headers={"Modality": modality, "Manufacturer": manufacturer, "StationName": station},
        )
    )
    session.flush()
    return study


def add_final_read(
    session: Session, study: Study, present: bool, *, read_at: datetime, task: str = "chest-xray", reader: str = "rita"
) -> FinalRead:
    read = FinalRead(
        study_id=study.id,
        study_instance_uid=study.study_instance_uid,
        revision=study.revision,
        reader=reader,
        read_at=read_at,
        note="",
        waited_s=(read_at - study.first_received_at).total_seconds(),
        tier_at_read="positive",
    )
    session.add(read)
    session.flush()
    session.add(FinalReadFinding(read_id=read.id, task=task, present=present))
    session.flush()
    return read


@pytest.fixture
def quality_db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'quality.db'}"
    migrate_all(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
