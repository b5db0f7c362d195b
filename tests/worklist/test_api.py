"""The worklist API over SQLite and a real PostgreSQL: priority order from champion results, filters and
pages, claims that two radiologists cannot both win, final reads, the audit trail, the priority history."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.db import session_scope, utcnow
from service.tables import AuditEvent
from tests.service.conftest import AddUser
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import FinalRead, FinalReadFinding, PriorityChange, WorklistEntry


def recompute(app: FastAPI, now=None) -> int:
    with session_scope(app.state.session_factory) as session:
        return len(recompute_worklist(session, policy_from_settings(app.state.settings), now))


def seed(app: FastAPI) -> dict[str, str]:
    """Six studies over the last 40 minutes: negatives first, positives later, a STAT, an unscored one."""
    now = utcnow()
    uids = {}
    with session_scope(app.state.session_factory) as session:
        for name, minutes_ago, score in [("neg1", 40, 0.05), ("neg2", 35, 0.2), ("pos1", 20, 0.8), ("pos2", 10, 0.97)]:
            study = make_study(session, arrived=now - timedelta(minutes=minutes_ago))
            add_result(session, study, score=score)
            # A challenger that disagrees: shadow only, it must not move the study.
            add_result(session, study, score=1 - score, role="challenger", model_version="4")
            uids[name] = study.study_instance_uid
        stat = make_study(
            session,
            arrived=now - timedelta(minutes=5),
            order_priority="STAT",
            modality="CT",
            task="ct-chest",
            site="North",
        )
        add_result(session, stat, score=0.01)
        uids["stat"] = stat.study_instance_uid
        waiting = make_study(session, arrived=now - timedelta(minutes=30), status="scoring")
        uids["unscored"] = waiting.study_instance_uid
        uids["receiving"] = make_study(session, status="receiving").study_instance_uid
    return uids


def test_list_in_priority_order_with_state_and_model(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    rita = add_user("rita", "radiologist")
    uids = seed(app)
    assert recompute(app) == 6  # six studies listed; the one still receiving is not

    paul = add_user("paul", "paediatrician")
    for path in ("/api/worklist", "/api/worklist/events", "/api/worklist/filters"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=paul).status_code == 403
    page = client.get("/api/worklist", headers=rita).json()
    order = {uid: name for name, uid in uids.items()}
    # The positives are raised above the study still being scored that arrived before them.
    assert [order[item["study_instance_uid"]] for item in page["items"]] == [
        "stat",
        "pos1",
        "pos2",
        "unscored",
        "neg1",
        "neg2",
    ]
    assert page["total"] == 6
    first_positive = page["items"][1]
    assert (first_positive["tier"], first_positive["call"], first_positive["score"], first_positive["threshold"]) == (
        "positive",
        "positive",
        0.8,
        0.5,
    )
    assert (first_positive["model_name"], first_positive["model_version"]) == ("chest-xray-champion", "3")
    assert page["items"][3]["state"] == "awaiting_score" and page["items"][3]["tier"] == "unscored"
    # The page shows the label the RIS is told, from the API, so the two cannot drift apart.
    assert page["items"][3]["tier_label"] == "routine" and first_positive["tier_label"] == "positive"
    assert page["items"][0]["priority_reason"].startswith("order priority STAT (never lowered by the model)")

    # filters and pages
    assert client.get("/api/worklist", headers=rita, params={"modality": "ct"}).json()["total"] == 1
    assert client.get("/api/worklist", headers=rita, params={"site": "North"}).json()["total"] == 1
    assert client.get("/api/worklist", headers=rita, params={"state": "awaiting_score"}).json()["total"] == 1
    second = client.get("/api/worklist", headers=rita, params={"limit": 2, "offset": 2}).json()
    assert [order[i["study_instance_uid"]] for i in second["items"]] == ["pos2", "unscored"] and second["total"] == 6
    filters = client.get("/api/worklist/filters", headers=rita).json()
    assert filters["modalities"] == ["CR", "CT"] and filters["sites"] == ["North", "St Elsewhere"]

    with session_scope(app.state.session_factory) as session:
        # Pages of the list show no patient identity and are not audited; opening a study is (below).
        assert session.scalar(select(AuditEvent).where(AuditEvent.action.like("worklist.%"))) is None


def test_results_arriving_later_move_the_study_and_are_recorded(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    rita = add_user("rita", "radiologist")
    uids = seed(app)
    recompute(app)
    with session_scope(app.state.session_factory) as session:
        study_id = session.scalar(
            select(WorklistEntry.study_id).where(WorklistEntry.study_instance_uid == uids["unscored"])
        )
        from inference.tables import Study

        study = session.get(Study, study_id)
        add_result(session, study, score=None, outcome="could_not_score", reason="no lung fields in view")
    recompute(app)
    item = next(
        i
        for i in client.get("/api/worklist", headers=rita).json()["items"]
        if i["study_instance_uid"] == uids["unscored"]
    )
    assert (item["state"], item["tier"], item["score_reason"]) == (
        "could_not_score",
        "unscored",
        "no lung fields in view",
    )

    # Time passes: 90 minutes after arrival (the default cap) the first negative goes back to its arrival
    # place, ahead of the positives that came after it; the change is recorded with its reason.
    assert recompute(app, utcnow() + timedelta(minutes=52)) == 1
    aged = client.get("/api/worklist", headers=rita, params={"limit": 1, "offset": 1}).json()["items"][0]
    assert aged["study_instance_uid"] == uids["neg1"] and aged["tier"] == "aged"
    history = client.get("/api/worklist/priority-changes", headers=rita, params={"study_uid": uids["neg1"]}).json()
    assert [(c["from_tier"], c["to_tier"]) for c in history["items"]] == [("negative", "aged"), (None, "negative")]
    assert "waited past the 90 min CR aging cap" in history["items"][0]["reason"]
    quality = add_user("quinn", "quality")
    assert client.get("/api/worklist/priority-changes", headers=quality).json()["total"] == 7
    assert client.get("/api/worklist", headers=quality).status_code == 403


def test_challenger_results_never_change_priority(app: FastAPI, add_user: AddUser) -> None:
    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        add_result(session, study, score=0.1)
        uid = study.study_instance_uid
    recompute(app)
    with session_scope(app.state.session_factory) as session:
        from inference.tables import Study

        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        add_result(session, study, score=0.99, role="challenger", model_version="9")
    assert recompute(app) == 0
    with session_scope(app.state.session_factory) as session:
        entry = session.scalar(select(WorklistEntry).where(WorklistEntry.study_instance_uid == uid))
        assert (entry.tier, entry.call, entry.model_version) == ("negative", "negative", "3")
        assert session.scalar(select(PriorityChange.to_tier).order_by(PriorityChange.id.desc()).limit(1)) == "negative"


def test_claim_release_and_final_read(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    rita, rob = add_user("rita", "radiologist"), add_user("rob", "radiologist")
    admin = add_user("ada", "admin")
    uids = seed(app)
    recompute(app)
    uid = uids["pos2"]

    # A read needs the claim.
    assert (
        client.post(f"/api/worklist/{uid}/read", headers=rita, json={"findings": {"chest-xray": "present"}}).status_code
        == 409
    )
    claimed = client.post(f"/api/worklist/{uid}/claim", headers=rita)
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "rita"
    assert client.post(f"/api/worklist/{uid}/claim", headers=rita).status_code == 200  # renewing one's own claim
    conflict = client.post(f"/api/worklist/{uid}/claim", headers=rob)
    assert conflict.status_code == 409 and "claimed by rita" in conflict.json()["detail"]
    assert client.post(f"/api/worklist/{uid}/release", headers=rob).status_code == 409
    assert client.post(f"/api/worklist/{uid}/release", headers=rita).json()["claimed_by"] is None
    assert client.post(f"/api/worklist/{uid}/claim", headers=rob).status_code == 200
    assert client.post(f"/api/worklist/{uid}/release", headers=admin).status_code == 200  # admin frees any claim
    assert client.post(f"/api/worklist/{uid}/claim", headers=rita).status_code == 200
    assert client.get("/api/worklist", headers=rita, params={"claimed": "mine"}).json()["total"] == 1

    # The read must name the study's task; then it closes the study and is stored as ground truth.
    assert (
        client.post(f"/api/worklist/{uid}/read", headers=rita, json={"findings": {"mammography": "absent"}}).status_code
        == 422
    )
    # A NUL in the note: PostgreSQL text cannot hold it, and the read had failed as a 500 there.
    nul = client.post(f"/api/worklist/{uid}/read", headers=rita,
                      json={"findings": {"chest-xray": "present"}, "note": "RLL\u0000consolidation"})
    assert nul.status_code == 422 and "NUL" in nul.text
    read = client.post(
        f"/api/worklist/{uid}/read",
        headers=rita,
        json={"findings": {"chest-xray": "present"}, "note": "RLL consolidation"},
    )
    assert read.status_code == 201, read.text
    body = read.json()
    assert (body["reader"], body["findings"], body["note"], body["tier_at_read"]) == (
        "rita",
        {"chest-xray": "present"},
        "RLL consolidation",
        "positive",
    )
    assert 590 < body["waited_s"] < 700
    assert client.post(f"/api/worklist/{uid}/claim", headers=rob).status_code == 409
    assert (
        client.post(f"/api/worklist/{uid}/read", headers=rita, json={"findings": {"chest-xray": "absent"}}).status_code
        == 409
    )

    assert client.get("/api/worklist", headers=rita).json()["total"] == 5
    done = client.get("/api/worklist", headers=rita, params={"state": "read"}).json()
    assert [i["study_instance_uid"] for i in done["items"]] == [uid] and done["items"][0]["is_open"] is False

    detail = client.get(f"/api/worklist/{uid}", headers=rita).json()
    assert detail["final_read"]["findings"] == {"chest-xray": "present"} and detail["patient_name"] == "Doe^Jane"
    kinds = [item["kind"] for item in detail["timeline"]]
    assert "score" in kinds and "priority" in kinds and kinds[-1] == "study.read"
    assert all("challenger" not in item["text"] for item in detail["timeline"])
    assert client.get(f"/api/worklist/{uid}/heatmap", headers=rita).status_code == 404
    assert client.get("/api/worklist/1.2.3.4", headers=rita).status_code == 404

    with session_scope(app.state.session_factory) as session:
        stored = session.scalar(select(FinalRead).where(FinalRead.study_instance_uid == uid))
        assert stored is not None and stored.score_result_id is not None
        assert session.scalar(select(FinalReadFinding.present).where(FinalReadFinding.read_id == stored.id)) is True
        actions = [
            (e.actor, e.action)
            for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == uid).order_by(AuditEvent.id))
        ]
    assert actions == [
        ("rita", "study.claim"),
        ("rita", "study.claim"),
        ("rita", "study.release"),
        ("rob", "study.claim"),
        ("ada", "study.release"),
        ("rita", "study.claim"),
        ("rita", "study.read"),
        ("rita", "study.view"),
    ]


def test_simultaneous_claims_have_one_winner(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    readers = [add_user(f"reader{n}", "radiologist") for n in range(6)]
    uid = seed(app)["pos1"]
    recompute(app)

    def claim(headers: dict[str, str]) -> int:
        return client.post(f"/api/worklist/{uid}/claim", headers=headers).status_code

    with ThreadPoolExecutor(len(readers)) as pool:
        statuses = sorted(pool.map(claim, readers))
    assert statuses == [200] + [409] * (len(readers) - 1)


def test_claim_lapses(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    rita, rob = add_user("rita", "radiologist"), add_user("rob", "radiologist")
    uid = seed(app)["pos1"]
    recompute(app)
    assert client.post(f"/api/worklist/{uid}/claim", headers=rita).status_code == 200
    with session_scope(app.state.session_factory) as session:
        entry = session.scalar(select(WorklistEntry).where(WorklistEntry.study_instance_uid == uid))
        entry.claimed_at = utcnow() - timedelta(minutes=61)
    assert client.post(f"/api/worklist/{uid}/claim", headers=rob).json()["claimed_by"] == "rob"


def test_a_final_read_names_known_tasks_only(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    """A finding for a task that does not exist had been stored on SQLite and was a 500 on PostgreSQL
    (longer than final_read_findings.task): both are a 422 naming the field."""
    rita = add_user("rita", "radiologist")
    uid = seed(app)["pos1"]
    recompute(app)
    assert client.post(f"/api/worklist/{uid}/claim", headers=rita).status_code == 200
    for task in ("x" * 40, "pneumonia"):
        answer = client.post(
            f"/api/worklist/{uid}/read", headers=rita, json={"findings": {"chest-xray": "present", task: "absent"}}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "findings", task, "[key]"]
    with session_scope(app.state.session_factory) as session:
        assert session.scalars(select(FinalReadFinding)).all() == []
    read = client.post(f"/api/worklist/{uid}/read", headers=rita, json={"findings": {"chest-xray": "present"}})
    assert read.status_code == 201 and read.json()["findings"] == {"chest-xray": "present"}
    with session_scope(app.state.session_factory) as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "study.read")).one()
        assert audit.detail == {"findings": {"chest-xray": "present"}}


def test_list_pages_carry_no_identity_and_the_audited_study_view_does(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """The list is not audited (it reloads on every live event) because it carries no patient identity; it had shown
    each study's accession number and free-text description (which can name the patient) with no audit row."""
    rita = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        study = make_study(session, description="CHEST PA for Leakname Secret")
        add_result(session, study, score=0.8)
        uid, accession = study.study_instance_uid, study.accession_number
    recompute(app)
    for params in ({}, {"claimed": "unclaimed"}):
        listed = client.get("/api/worklist", headers=rita, params=params)
        assert listed.status_code == 200 and listed.json()["total"] == 1
        for forbidden in (accession, "Leakname", "PID-1", "Doe^Jane"):
            assert forbidden not in listed.text, forbidden
    claimed = client.post(f"/api/worklist/{uid}/claim", headers=rita)
    assert claimed.status_code == 200 and accession not in claimed.text
    read = client.get("/api/worklist", headers=rita, params={"claimed": "mine"})
    assert [item["study_instance_uid"] for item in read.json()["items"]] == [uid] and accession not in read.text
    with session_scope(app.state.session_factory) as session:
        views = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "study.view"))
    assert views == 0, "a list page is not a view of a study"

    detail = client.get(f"/api/worklist/{uid}", headers=rita).json()
    assert (detail["accession_number"], detail["study_description"]) == (accession, "CHEST PA for Leakname Secret")
    assert (detail["patient_id"], detail["patient_name"]) == ("PID-1", "Doe^Jane")
    with session_scope(app.state.session_factory) as session:
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "study.view")).all()
        assert [(e.actor, e.subject_id) for e in audited] == [("rita", uid)]
