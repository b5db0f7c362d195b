"""Ingest into the study record, duplicates, revisions, quarantine, completeness and routing (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import Connection, func, select

from inference import ingest
from inference.complete import CompletenessMonitor
from inference.errors import DifferingDuplicate, InstanceTooLarge, MissingAttribute, OutOfResources
from inference.ingest import InstanceIngestor
from inference.receive.process import build_ingestor
from inference.receive.status import dicom_status_for
from inference.route import load_rules
from inference.tables import Instance, QuarantinedItem, Study, StudyEvent
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, utcnow
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))


@pytest.fixture
def backend_ingestor(service_settings: Settings) -> InstanceIngestor:
    """An ingestor over each database backend (SQLite file, real PostgreSQL)."""
    service_settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(service_settings.resolved_database_url)
    return build_ingestor(service_settings)


def _copy(ingestor: InstanceIngestor, source: Path) -> Path:
    target = ingestor.spool.new_incoming_path()
    target.write_bytes(source.read_bytes())
    return target


def _monitor(ingestor: InstanceIngestor, counter=None) -> CompletenessMonitor:
    factory = make_session_factory(make_engine(ingestor.settings.resolved_database_url, serialise_writes=True))
    return CompletenessMonitor(ingestor.settings, factory, load_rules(), counter)


def _study(ingestor: InstanceIngestor) -> Study:
    with make_session_factory(ingestor.engine)() as session:
        return session.scalars(select(Study)).one()


def _events(ingestor: InstanceIngestor) -> list[str]:
    with make_session_factory(ingestor.engine)() as session:
        return list(session.scalars(select(StudyEvent.kind).order_by(StudyEvent.id)))


def test_instances_are_spooled_recorded_and_idempotent(backend_ingestor: InstanceIngestor) -> None:
    for path in CT:
        stored = backend_ingestor.accept_file(_copy(backend_ingestor, path), source="dimse", calling_ae="PACS")
        assert stored.path.is_file() and not stored.duplicate
        assert stored.path.read_bytes()[128:132] == b"DICM"
    again = backend_ingestor.accept_file(_copy(backend_ingestor, CT[0]), source="dimse", calling_ae="PACS")
    assert again.duplicate
    study = _study(backend_ingestor)
    assert (study.status, study.instance_count, study.modality, study.revision) == ("receiving", 3, "CT", 1)
    with make_session_factory(backend_ingestor.engine)() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 3
    assert not any(backend_ingestor.spool.incoming.iterdir()), "nothing may be left in incoming"


def test_quiet_period_completes_and_routes_then_a_late_instance_reopens_a_new_revision(
    backend_ingestor: InstanceIngestor,
) -> None:
    for path in CT[:2]:
        backend_ingestor.accept_file(_copy(backend_ingestor, path), source="dimse")
    monitor = _monitor(backend_ingestor)
    last = _study(backend_ingestor).last_received_at
    quiet = backend_ingestor.settings.quiet_period_s

    assert monitor.complete_quiet_studies(now=last + timedelta(seconds=quiet / 2)) == []
    completed = monitor.complete_quiet_studies(now=last + timedelta(seconds=quiet + 0.01))
    assert [c.reason for c in completed] == ["quiet-period"]
    routed = monitor.route_complete_studies()
    assert [r.task for r in routed] == ["ct-chest"]
    study = _study(backend_ingestor)
    assert (study.status, study.task, study.revision) == ("routed", "ct-chest", 1)

    backend_ingestor.accept_file(_copy(backend_ingestor, CT[2]), source="dimse")
    study = _study(backend_ingestor)
    assert (study.status, study.revision, study.instance_count) == ("receiving", 2, 3)
    assert _events(backend_ingestor) == ["receiving", "complete", "routed", "reopened"]


class _PacsCount:
    """The PACS's answer to a count query (the real C-FIND is exercised with Orthanc in the integration test)."""

    def __init__(self, count: int) -> None:
        self.value = count
        self.asked = 0

    def count(self, study_instance_uid: str) -> int | None:
        self.asked += 1
        return self.value


def test_pacs_count_completes_before_the_quiet_period(sqlite_settings: Settings) -> None:
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"quiet_period_s": 60.0}))
    counter = _PacsCount(3)
    monitor = _monitor(ingestor, counter)
    for path in CT[:2]:
        ingestor.accept_file(_copy(ingestor, path), source="dimse")
    assert monitor.complete_quiet_studies() == []  # 2 of 3 received
    ingestor.accept_file(_copy(ingestor, CT[2]), source="dimse")
    later = utcnow() + timedelta(seconds=3)  # past the PACS query interval, well inside the quiet period
    completed = monitor.complete_quiet_studies(now=later)
    assert [c.reason for c in completed] == ["pacs-count"] and counter.asked == 2


def test_per_modality_quiet_period(sqlite_settings: Settings) -> None:
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"quiet_period_by_modality": {"CT": 60.0}}))
    ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    monitor = _monitor(ingestor)
    last = _study(ingestor).last_received_at
    assert monitor.complete_quiet_studies(now=last + timedelta(seconds=30)) == []
    assert len(monitor.complete_quiet_studies(now=last + timedelta(seconds=61))) == 1


def test_a_backward_clock_step_does_not_hold_a_study_in_receiving(sqlite_settings: Settings) -> None:
    """Review 4 (infra D10): after a clock that ran an hour fast was stepped back, the study stayed receiving for an
    hour (its last instance's time was in the future, and a negative wait never counted as elapsed)."""
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"quiet_period_s": 10.0}))
    ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    monitor = _monitor(ingestor)
    last = _study(ingestor).last_received_at
    assert monitor.complete_quiet_studies(now=last + timedelta(seconds=5)) == []  # a normal quiet period still holds
    completed = monitor.complete_quiet_studies(now=last - timedelta(hours=1) + timedelta(seconds=1))
    assert [c.reason for c in completed] == ["quiet-period"] and _study(ingestor).status == "complete"


def test_an_instance_arriving_during_a_pass_does_not_complete_its_study(sqlite_settings: Settings) -> None:
    """Review 5 (flakes): a pass took its time before reading the studies; an instance stored in between was "after"
    that time, the clock-step rule counted the quiet period as elapsed, and the study was routed mid-transfer
    (Orthanc's STOW-RS test completed a study by 'quiet-period' with part of its instances)."""
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"quiet_period_s": 10.0}))
    ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    monitor = _monitor(ingestor)
    last = _study(ingestor).last_received_at
    assert monitor.complete_quiet_studies(now=last - timedelta(seconds=0.5)) == []
    assert monitor.complete_quiet_studies(now=last - timedelta(seconds=9)) == []  # a step smaller than the quiet period
    assert monitor.complete_quiet_studies() == []  # the pass's own time, read after the study
    assert _study(ingestor).status == "receiving"


def test_refused_instance_is_quarantined_with_its_reason(ingestor: InstanceIngestor) -> None:
    with pytest.raises(MissingAttribute):
        ingestor.accept_file(
            _copy(ingestor, INFERENCE_FIXTURES / "bad" / "missing_uids.dcm"), source="dimse", calling_ae="MOD1"
        )
    with make_session_factory(ingestor.engine)() as session:
        item = session.scalars(select(QuarantinedItem)).one()
        assert session.scalar(select(func.count()).select_from(Study)) == 0
    assert (item.kind, item.calling_ae) == ("missing-attribute", "MOD1")
    sidecar = json.loads(Path(item.path).with_suffix(".json").read_text())
    assert sidecar["reason"] == item.reason and sidecar["file"] == Path(item.path).name and Path(item.path).is_file()


def _with_headers(tmp_path: Path, **values: str) -> Path:
    ds = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    path = tmp_path / "edited.dcm"
    ds.save_as(path)
    return path


def test_a_nul_inside_display_text_is_removed_and_the_instance_stored(
    backend_ingestor: InstanceIngestor, tmp_path: Path
) -> None:
    # PostgreSQL text cannot hold NUL: the insert failed and the sender got 0x0110, the file left without a row.
    edited = _with_headers(
        tmp_path, StudyDescription="CHEST\x00PA", PatientName="Doe^Jane\x00", InstitutionName="St\x00 Mary"
    )
    stored = backend_ingestor.accept_file(_copy(backend_ingestor, edited), source="dimse", calling_ae="PACS")
    assert not stored.duplicate and stored.path.is_file()
    study = _study(backend_ingestor)
    assert (study.study_description, study.patient_name, study.institution_name) == ("CHESTPA", "Doe^Jane", "St Mary")


@pytest.mark.parametrize("keyword", ["PatientID", "AccessionNumber"])
def test_a_nul_inside_an_identifier_refuses_and_quarantines_the_instance(
    backend_ingestor: InstanceIngestor, tmp_path: Path, keyword: str
) -> None:
    edited = _with_headers(tmp_path, **{keyword: "12\x0034"})
    with pytest.raises(MissingAttribute, match=f"{keyword} holds a NUL character"):
        backend_ingestor.accept_file(_copy(backend_ingestor, edited), source="dimse", calling_ae="PACS")
    with make_session_factory(backend_ingestor.engine)() as session:
        item = session.scalars(select(QuarantinedItem)).one()
        assert session.scalar(select(func.count()).select_from(Study)) == 0
    assert item.kind == "missing-attribute" and "NUL" in item.reason and Path(item.path).is_file()
    assert not any(backend_ingestor.spool.studies.rglob("*.dcm")), "no file may be left in the spool without a row"


def test_instance_over_the_size_limit_is_refused(sqlite_settings: Settings) -> None:
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"max_instance_mb": 0}))
    with pytest.raises(InstanceTooLarge, match="exceeds the 0 MB limit"):
        ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")


def test_disk_under_the_watermark_refuses_without_writing(sqlite_settings: Settings) -> None:
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"min_free_disk_mb": 1 << 40}))
    received = _copy(ingestor, CT[0])
    with pytest.raises(OutOfResources, match="watermark"):
        ingestor.accept_file(received, source="dimse")
    assert not received.exists()


def test_a_commit_onto_a_full_database_is_out_of_resources_and_leaves_no_file(
    ingestor: InstanceIngestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite on a full disk: the file was linked to its final name inside the transaction, the commit failed, and
    # the image stayed in the spool with no row (never listed, never removed by retention); the sender got 0x0110.
    # SQLite's max_page_count makes the transaction's next page fail as a full disk does (SQLITE_FULL).
    record_instance = ingest.record_instance

    def then_the_database_is_full(connection: Connection, *args: Any, **kwargs: Any) -> Any:
        recorded = record_instance(connection, *args, **kwargs)
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
        connection.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        connection.exec_driver_sql("UPDATE instances SET path = path || hex(zeroblob(100000))")
        return recorded

    with monkeypatch.context() as full:
        full.setattr(ingest, "record_instance", then_the_database_is_full)
        with pytest.raises(OutOfResources, match="database or disk is full") as refused:
            ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    assert dicom_status_for(refused.value) == 0xA700, "Refused: out of resources, the sender retries later"
    assert not [p for p in ingestor.spool.studies.rglob("*") if p.is_file()], "no file without a row"
    assert not any(ingestor.spool.incoming.iterdir())
    ingestor.engine.dispose()  # space returns (the page limit was the connection's)
    stored = ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    assert not stored.duplicate and stored.path.read_bytes() == CT[0].read_bytes()
    # A commit reported as failed but applied (PostgreSQL's connection lost during COMMIT): a file a row names stays.
    ingestor._remove_unrecorded(stored.path, stored.headers.sop_instance_uid)
    assert stored.path.is_file()


def test_same_sop_instance_uid_in_another_study_keeps_the_first(ingestor: InstanceIngestor, tmp_path: Path) -> None:
    first = ingestor.accept_file(_copy(ingestor, CT[0]), source="dimse")
    ds = dcmread(CT[0])
    ds.StudyInstanceUID = generate_uid()
    clash = tmp_path / "clash.dcm"
    ds.save_as(clash)
    # Other bytes under a stored SOP Instance UID: refused and set aside, the first copy stays (first writer wins).
    with pytest.raises(DifferingDuplicate):
        ingestor.accept_file(_copy(ingestor, clash), source="dimse")
    assert first.path.read_bytes() == CT[0].read_bytes()
    assert not (ingestor.spool.studies / ds.StudyInstanceUID).exists()
