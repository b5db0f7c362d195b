"""``medscreen screening assign|unassign|assignments``: who sees which practitioner's or organisation's flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from medscreen.cli import main
from medscreen.schema import migrate_all
from screening.tables import ScreeningAssignment
from service.db import make_engine, make_session_factory, session_scope
from service.tables import AuditEvent
from service.users import create_user

CLINIC = "Organization/clinic-7"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database with a paediatrician (dr-a) and a radiologist (rita); no app, no screener."""
    url = f"sqlite:///{tmp_path / 'medscreen.db'}"
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", url)
    migrate_all(url)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        create_user(session, "dr-a", "dr-a-password-long", ["paediatrician"], actor="test")
        create_user(session, "rita", "rita-password-long", ["radiologist"], actor="test")
    engine.dispose()
    return url


def _rows(url: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        assigned = [(r.username, r.practitioner, r.organization) for r in session.scalars(select(ScreeningAssignment))]
        audit = [
            (e.actor, e.action, e.subject_id)
            for e in session.scalars(select(AuditEvent).where(AuditEvent.action.startswith("screening.")))
        ]
    engine.dispose()
    return assigned, audit


def _lines(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if not line.startswith("medscreen: home ")]
    return captured.out.splitlines(), err


def test_assign_twice_says_so_and_an_unknown_user_or_a_non_paediatrician_is_refused(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["screening", "assign", "dr-a", "--organization", CLINIC]) == 0
    assert _lines(capsys) == ([f"dr-a now sees flags of {CLINIC}"], [])
    # Run again (a runbook re-run): it had been an IntegrityError traceback with the SQL and its parameters.
    assert main(["screening", "assign", "dr-a", "--organization", CLINIC]) == 0
    assert _lines(capsys) == ([f"dr-a already sees flags of {CLINIC}"], [])

    # A mistyped name had been reported a success and left the real paediatrician without the flags.
    assert main(["screening", "assign", "pual", "--organization", CLINIC]) == 1
    assert _lines(capsys) == ([], ["medscreen screening assign: no user 'pual'"])
    assert main(["screening", "assign", "rita", "--practitioner", "Practitioner/123"]) == 1
    out, err = _lines(capsys)
    assert out == [] and len(err) == 1 and "rita is not a paediatrician (roles: radiologist)" in err[0]

    assigned, audit = _rows(database)
    assert assigned == [("dr-a", "", CLINIC)]
    assert [(action, subject) for _, action, subject in audit] == [("screening.assign", "dr-a")]
    assert all(actor.startswith("cli:") for actor, _, _ in audit)  # cli:<login>, as the users commands


def test_assignments_are_listed_and_undone(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screening", "assign", "dr-a", "--practitioner", "Practitioner/123", "--organization", CLINIC]) == 0
    capsys.readouterr()
    assert main(["screening", "assignments"]) == 0
    listed = [line.split("\t")[:2] for line in _lines(capsys)[0]]
    assert listed == [["dr-a", "Practitioner/123"], ["dr-a", CLINIC]]

    assert main(["screening", "unassign", "dr-a", "--organization", CLINIC]) == 0
    assert _lines(capsys) == ([f"dr-a no longer sees flags of {CLINIC}"], [])
    assert main(["screening", "unassign", "dr-a", "--organization", CLINIC]) == 0
    assert _lines(capsys) == ([f"dr-a was not assigned to {CLINIC}"], [])
    assert main(["screening", "unassign", "nobody", "--organization", CLINIC]) == 1
    assert _lines(capsys) == ([], ["medscreen screening unassign: no user 'nobody'"])
    assert main(["screening", "assignments", "dr-a"]) == 0
    assert [line.split("\t")[:2] for line in _lines(capsys)[0]] == [["dr-a", "Practitioner/123"]]

    assigned, audit = _rows(database)
    assert assigned == [("dr-a", "Practitioner/123", "")]
    assert [action for _, action, _ in audit] == ["screening.assign", "screening.assign", "screening.unassign"]


def test_unassign_keeps_the_other_half_of_an_earlier_two_option_assignment(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database)
    with session_scope(make_session_factory(engine)) as session:  # one row, as `assign` with both options wrote it
        session.add(ScreeningAssignment(username="dr-a", practitioner="Practitioner/123", organization=CLINIC, assigned_by="cli"))
    engine.dispose()
    assert main(["screening", "unassign", "dr-a", "--practitioner", "Practitioner/123"]) == 0
    assert _rows(database)[0] == [("dr-a", "", CLINIC)]


def test_a_reference_longer_than_a_result_stores_is_refused_in_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL: a StringDataRightTruncation traceback; SQLite: an assignment no stored result (clipped to 128
    # characters) could ever match.
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", database_url)
    migrate_all(database_url)
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        create_user(session, "dr-a", "dr-a-password-long", ["paediatrician"], actor="test")
    engine.dispose()
    long = "Organization/" + "o" * 130
    for command in ("assign", "unassign"):
        assert main(["screening", command, "dr-a", "--organization", long]) == 1
        assert _lines(capsys) == ([], [
            f"medscreen screening {command}: the organization reference is 143 characters long; at most 128 are "
            "stored with a result"])
    assert _rows(database_url) == ([], [])
    assert main(["screening", "assign", "dr-a", "--organization", long[:128]]) == 0
