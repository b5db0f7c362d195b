"""A corrected re-send holds whatever stage its study is at, and a job queued before it never re-raises the study
(review round 3, crash D1 and D2; honesty D1: the PACS gets an SR that replaces the withdrawn one). The real pipeline,
the shipped chest model and real Kermany films, on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from sqlalchemy import select

import inference.score_job as score_job
from benchmarks.study_factory import wrap_radiograph
from inference.complete import CompletenessMonitor
from inference.errors import DifferingDuplicate
from inference.fhir_feed import take_in_fhir_results
from inference.outgoing import outgoing_dir
from inference.receive.process import build_ingestor
from inference.route import load_rules
from inference.tables import OutgoingResult, QuarantinedItem, ScoreResult, ScoringJob, Study
from inference.worker_process import build_worker
from inference.writeback import CALL
from service.db import make_engine, make_session_factory, session_scope
from service.outbox import OutboxMessage
from tests.conftest import FIXTURES
from tests.inference.conftest import Pipeline
from tests.ports import free_port
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.ris_feed import endpoint_from_settings, take_in_ris_messages
from worklist.tables import WorklistEntry

PNEUMONIA = FIXTURES / "datasets" / "kermany" / "train" / "PNEUMONIA"
FILM = PNEUMONIA / "person1000_bacteria_2931.jpeg"
LATE_FILM = PNEUMONIA / "person1001_bacteria_2932.jpeg"


def _corrected(original: Path, folder: Path) -> Path:
    ds = dcmread(original)
    ds.PatientAge, ds.PatientBirthDate = "034Y", "19920101"
    path = folder / f"corrected-{original.name}"
    ds.save_as(path, enforce_file_format=True)
    return path


def _resend(pipeline: Pipeline, path: Path) -> None:
    with pytest.raises(DifferingDuplicate):
        pipeline.receive(path)


def _state(pipeline: Pipeline) -> tuple[Study, list[ScoreResult], WorklistEntry]:
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy_from_settings(pipeline.settings))
        study = session.scalars(select(Study)).one()
        results = list(session.scalars(select(ScoreResult).order_by(ScoreResult.id)))
        entry = session.scalars(select(WorklistEntry)).one()
        session.expunge_all()
    return study, results, entry


@pytest.mark.parametrize("stage", ["receiving", "queued", "scoring"])
def test_a_correction_before_scoring_puts_the_study_out_of_scope(
    pipeline: Pipeline, tmp_path: Path, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5 y film corrected to 34 y before the child-only model's score is stored: the correction had been ignored
    (nothing scored to withdraw) and the model's positive stood."""
    original = wrap_radiograph(FILM, tmp_path / "film.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(original)
    if stage == "queued":
        pipeline.monitor.run_once()
        pipeline.worker.enqueue_routed()
    if stage == "scoring":
        real_score = score_job.score_study

        def correction_while_the_model_runs(*args: object, **kwargs: object) -> object:
            _resend(pipeline, _corrected(original, tmp_path))
            return real_score(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(score_job, "score_study", correction_while_the_model_runs)
    else:
        _resend(pipeline, _corrected(original, tmp_path))
    pipeline.complete_route_and_score()
    study, results, entry = _state(pipeline)
    reason = "header corrected before scoring: PatientAge, PatientBirthDate"
    assert (study.revision, study.status, study.status_reason) == (1, "out_of_scope", reason)
    assert [(r.role, r.outcome, r.call, r.score, r.reason) for r in results] == [
        ("champion", "out_of_scope", None, None, reason)
    ]
    assert (entry.state, entry.tier) == ("out_of_scope", "unscored")

    # A late image re-opens the study: the new revision still holds the corrected instance, so it is not scored either.
    pipeline.receive(wrap_radiograph(LATE_FILM, tmp_path / "late.dcm", view_position="PA", patient_age="005Y",
                                     study_uid=dcmread(original).StudyInstanceUID))
    pipeline.complete_route_and_score()
    study, results, entry = _state(pipeline)
    assert (study.revision, study.status, results[-1].outcome, entry.tier) == (2, "out_of_scope", "out_of_scope", "unscored")


def test_a_job_queued_before_a_withdrawal_never_becomes_the_result(pipeline: Pipeline, tmp_path: Path) -> None:
    """Rev 1 scored positive; a late film queues rev 2; the corrected copy withdraws the study (rev 3). The rev-2 job
    then ran and its positive, with the highest id, became the current result in the EMR and the RIS."""
    factory = pipeline.worker.session_factory
    endpoint = endpoint_from_settings(pipeline.settings)
    take_in_fhir_results(factory)
    take_in_ris_messages(factory, endpoint)
    first = wrap_radiograph(FILM, tmp_path / "a.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(first)
    pipeline.complete_route_and_score()
    pipeline.receive(wrap_radiograph(LATE_FILM, tmp_path / "b.dcm", view_position="PA", patient_age="005Y",
                                     study_uid=dcmread(first).StudyInstanceUID))
    pipeline.monitor.run_once()
    pipeline.worker.enqueue_routed()  # the rev-2 job is queued, not yet claimed
    _resend(pipeline, _corrected(first, tmp_path))
    while pipeline.worker.process_one():
        pass
    take_in_fhir_results(factory)
    take_in_ris_messages(factory, endpoint)

    study, results, entry = _state(pipeline)
    assert (study.revision, study.status) == (3, "out_of_scope")
    # The rev-2 job is done without a result: its revision is superseded.
    assert [(r.revision, r.role, r.outcome) for r in results] == [(1, "champion", "scored"), (3, "champion", "out_of_scope")]
    assert entry.state == "out_of_scope"
    with session_scope(factory) as session:
        pushed = [json.loads(p) for p in session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.channel == "fhir").order_by(OutboxMessage.id))]
        orus = list(session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.like("MSR%"))
                                    .order_by(OutboxMessage.id)))
    current = [(e["resource"]["id"], e["resource"]["status"]) for e in pushed[-1]["entry"]
               if e["resource"]["resourceType"] == "DiagnosticReport"]
    withdrawal = results[1].id
    assert current == [(f"medscreen-dr-{withdrawal}", "final"), (f"medscreen-dr-{results[0].id}", "entered-in-error")]
    assert orus == [f"MSR{results[0].id}", f"MSR{withdrawal}"]


def test_a_job_running_when_the_study_is_withdrawn_is_not_its_result(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rev-2 job is being scored when the corrected copy withdraws the study (rev 3): its result is kept for
    the record, as a previous champion's in shadow, with no SR, and never becomes the study's result."""
    first = wrap_radiograph(FILM, tmp_path / "a.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(first)
    pipeline.complete_route_and_score()
    pipeline.receive(wrap_radiograph(LATE_FILM, tmp_path / "b.dcm", view_position="PA", patient_age="005Y",
                                     study_uid=dcmread(first).StudyInstanceUID))
    real_score = score_job.score_study

    def withdrawn_while_the_model_runs(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(score_job, "score_study", real_score)
        _resend(pipeline, _corrected(first, tmp_path))
        return real_score(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(score_job, "score_study", withdrawn_while_the_model_runs)
    pipeline.complete_route_and_score()
    study, results, entry = _state(pipeline)
    assert (study.revision, study.status, entry.state) == (3, "out_of_scope", "out_of_scope")
    assert [(r.revision, r.role, r.steering == "shadow", r.outcome) for r in results] == [
        (1, "champion", False, "scored"), (3, "champion", False, "out_of_scope"),
        (2, "previous-champion", True, "out_of_scope"),
    ]
    assert results[2].sr_sop_instance_uid is None


def test_the_chain_is_ordered_by_revision_whatever_the_ids(pipeline: Pipeline, tmp_path: Path) -> None:
    """A champion result of an older revision with a higher id (stored before this fix, or by another release) is
    the earlier one of the chain: the EMR and RIS had taken it as replacing the newer revision's result."""
    from inference.fhir_results import facts_of
    from worklist.hl7_messages import champion_result

    first = wrap_radiograph(FILM, tmp_path / "a.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(first)
    pipeline.complete_route_and_score()
    _resend(pipeline, _corrected(first, tmp_path))
    with session_scope(pipeline.worker.session_factory) as session:
        scored, withdrawal = session.scalars(select(ScoreResult).order_by(ScoreResult.id)).all()
        first_job = session.get(ScoringJob, scored.job_id)
        job = ScoringJob(**{c.key: getattr(first_job, c.key) for c in ScoringJob.__table__.columns if c.key != "id"})
        job.model_version = "late"
        session.add(job)
        session.flush()
        late = ScoreResult(**{c.key: getattr(scored, c.key) for c in ScoreResult.__table__.columns
                              if c.key not in ("id", "sr_sop_instance_uid", "sr_series_instance_uid",
                                               "heatmap_sop_instance_uid")})
        late.job_id = job.id
        session.add(late)
        session.flush()
        study = session.get(Study, scored.study_id)
        assert study is not None
        assert (facts_of(late, study).superseded_by, champion_result(late).superseded_by) == (withdrawal.id, withdrawal.id)
        assert facts_of(withdrawal, study).superseded_by is None
        assert champion_result(withdrawal).corrects == late.id
        session.rollback()


def test_a_failed_refusal_leaves_no_file_in_the_quarantine(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal's transaction rolled back (the PACS is told of a processing failure) after its file was moved
    into the quarantine: a copy of a patient's image that no row names, which the quota and retention never see."""
    original = wrap_radiograph(FILM, tmp_path / "film.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(original)
    pipeline.complete_route_and_score()

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(type(pipeline.ingestor), "_withdraw_after_correction", fails)
    with pytest.raises(RuntimeError):
        pipeline.receive(_corrected(original, tmp_path))
    with session_scope(pipeline.worker.session_factory) as session:
        assert session.scalars(select(QuarantinedItem)).all() == []
    assert [p for p in pipeline.ingestor.spool.quarantine.rglob("*") if p.is_file()] == []


@pytest.fixture
def pacs_pipeline(pipeline: Pipeline) -> Pipeline:
    """The pipeline with a PACS configured (nothing listens there: the rows and files are what is checked)."""
    settings = pipeline.settings.model_copy(update={"pacs_ae_title": "PACS", "pacs_host": "127.0.0.1",
                                                    "pacs_port": free_port(), "dispatch_retry_base_s": 60.0})
    factory = make_session_factory(make_engine(settings.resolved_database_url, serialise_writes=True))
    return Pipeline(settings, build_ingestor(settings), CompletenessMonitor(settings, factory, load_rules()),
                    build_worker(settings))


def _call_of_sr(pipeline: Pipeline, study_uid: str, sop_instance_uid: str) -> str:
    sr = hd.sr.Comprehensive3DSR.from_dataset(dcmread(outgoing_dir(pipeline.settings) / study_uid / f"{sop_instance_uid}.dcm"))
    (group,) = sr.content.get_image_measurement_groups()
    return str(group.get_qualitative_evaluations(name=CALL)[0].value.meaning)


@pytest.mark.parametrize("when", ["withdrawal", "next revision"])
def test_the_pacs_gets_an_sr_that_replaces_the_withdrawn_positive(pacs_pipeline: Pipeline, tmp_path: Path, when: str) -> None:
    """The withdrawal (and a later revision not scored) had left the PACS with the positive SR as the study's only
    AI result."""
    p = pacs_pipeline
    first = wrap_radiograph(FILM, tmp_path / "a.dcm", view_position="PA", patient_age="005Y")
    uid = dcmread(first).StudyInstanceUID
    p.receive(first)
    p.complete_route_and_score()
    if when == "next revision":  # the late image queues rev 2; the correction arrives before it is scored
        p.receive(wrap_radiograph(LATE_FILM, tmp_path / "b.dcm", view_position="PA", patient_age="005Y", study_uid=uid))
        p.monitor.run_once()
    _resend(p, _corrected(first, tmp_path))
    p.complete_route_and_score()
    with session_scope(p.worker.session_factory) as session:
        scored, replacing = session.scalars(
            select(ScoreResult).where(ScoreResult.role == "champion").order_by(ScoreResult.id)).all()
        outgoing = session.scalars(select(OutgoingResult).where(OutgoingResult.score_result_id == replacing.id)).one()
        rows = (replacing.outcome, replacing.supersedes_id, outgoing.sop_instance_uids)
        uids = (scored.sr_sop_instance_uid, replacing.sr_sop_instance_uid)
    assert rows == ("out_of_scope", scored.id, [uids[1]])
    assert "outside the model's intended use" in _call_of_sr(p, uid, str(uids[1]))
    predecessor = dcmread(outgoing_dir(p.settings) / uid / f"{uids[1]}.dcm").PredecessorDocumentsSequence[0]
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uids[0]
