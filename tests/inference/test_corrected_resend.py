"""A corrected study re-sent with its SOP Instance UIDs: the first copy is kept, and a correction of what the
intended-use gate reads withdraws the model's effect on the study (review 3 defect 7). The real pipeline, the
shipped chest model, a real Kermany film."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from benchmarks.study_factory import wrap_radiograph
from inference.errors import DifferingDuplicate
from inference.tables import Instance, ScoreResult, Study
from service.db import session_scope
from tests.conftest import FIXTURES
from tests.inference.conftest import Pipeline
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import PriorityChange, WorklistEntry

PNEUMONIA = FIXTURES / "datasets" / "kermany" / "train" / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"


def _resend(pipeline: Pipeline, original: Path, folder: Path, name: str, **attributes: object) -> None:
    ds = dcmread(original)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DifferingDuplicate):
        pipeline.receive(path)
    pipeline.complete_route_and_score()


def _entry(pipeline: Pipeline) -> WorklistEntry:
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy_from_settings(pipeline.settings))
        entry = session.scalars(select(WorklistEntry)).one()
        session.expunge(entry)
        return entry


def test_a_corrected_age_withdraws_the_raise_and_keeps_the_first_copy(pipeline: Pipeline, tmp_path: Path) -> None:
    """A child scored at 5 y and raised is corrected to an adult (the chest model is validated for 1-5 y): the
    re-sent copy was refused and the study stayed raised by a model outside its intended use."""
    original = wrap_radiograph(PNEUMONIA, tmp_path / "film.dcm", view_position="PA", patient_age="005Y")
    pipeline.receive(original)
    pipeline.complete_route_and_score()
    assert _entry(pipeline).tier == "positive"

    # Another difference the gate does not read (the institution's name) changes nothing.
    _resend(pipeline, original, tmp_path, "renamed.dcm", InstitutionName="Renamed Hospital")
    assert _entry(pipeline).tier == "positive"

    _resend(pipeline, original, tmp_path, "corrected.dcm", PatientAge="034Y", PatientBirthDate="19920101")
    entry = _entry(pipeline)
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        results = session.scalars(select(ScoreResult).order_by(ScoreResult.id)).all()
        kept = session.scalars(select(Instance.path)).one()
        changes = session.scalars(select(PriorityChange.to_tier).order_by(PriorityChange.id)).all()
        events = [(e.kind, (e.detail or {}).get("reason")) for e in study.events]
    reason = "header corrected after scoring: PatientAge, PatientBirthDate"
    assert (study.status, study.status_reason) == ("out_of_scope", reason)
    assert [(r.outcome, r.call) for r in results] == [("scored", "positive"), ("out_of_scope", None)]
    assert results[1].reason == reason and results[1].writeback_state == "disabled"
    assert (entry.state, entry.tier, entry.due_at) == ("out_of_scope", "unscored", entry.arrived_at)
    assert changes[-1] == "unscored" and ("out_of_scope", reason) in events
    assert dcmread(kept).PatientAge == "005Y"  # the first copy is kept
