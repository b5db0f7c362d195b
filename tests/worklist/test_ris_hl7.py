"""HL7 v2.5.1 to the RIS: messages parsed back by a real MLLP listener (hl7apy's), ACK/NAK, outage, order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import hl7
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db import session_scope, utcnow
from service.outbox import OutboxMessage, RetryPolicy, dispatch
from tests.conftest import free_port
from tests.service.conftest import AddUser
from tests.worklist.conftest import add_result, make_study
from tests.worklist.ris_peer import RisListener
from worklist.hl7_messages import (
    DECISION_SUPPORT_NOTE,
    SHADOW_NOTE,
    ChampionResult,
    Hl7Endpoint,
    StudyOrder,
    champion_result,
    parse_message_strict,
    priority_update,
    result_report,
)
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.ris import PriorityChanged
from worklist.ris_feed import CHANNEL, RisSender, take_in_ris_messages
from worklist.tables import PriorityChange

ENDPOINT = Hl7Endpoint("MEDSCREEN", "ST ELSEWHERE", "RIS", "ST ELSEWHERE")
ORDER = StudyOrder("1.2.826.0.1.3680043.8.498.1", "ACC000042", "PID-1", "Doe^Jane", "DX", "CHEST PA | erect")


def _obx(message: object) -> dict[str, tuple[str, str]]:
    group = message.oru_r01_patient_result.oru_r01_order_observation  # type: ignore[attr-defined]
    values = {}
    for observation in group.oru_r01_observation:
        obx = observation.obx
        values[obx.obx_3.ce_1.value] = (obx.obx_5.value, obx.obx_17.ce_2.value)
    return values


def test_priority_update_is_a_valid_omi_o23_with_priority_reason_and_study_uid() -> None:
    now = utcnow()
    change = PriorityChanged(7, ORDER.study_instance_uid, ORDER.accession_number, now, "unscored", "positive",
                             now, "chest-xray v3 positive (score 0.93, threshold 0.50): read at arrival | A^B")
    er7 = priority_update(ENDPOINT, ORDER, change, control_id="MSPC7", at=now)
    message = parse_message_strict(er7)
    assert message.validate()
    assert message.msh.msh_9.to_er7() == "OMI^O23^OMI_O23" and message.msh.msh_10.value == "MSPC7"
    assert message.msh.msh_12.to_er7() == "2.5.1"
    order = message.omi_o23_order
    assert order.orc.orc_1.value == "XO" and order.orc.orc_3.to_er7() == "ACC000042"
    assert order.omi_o23_timing.tq1.tq1_9.to_er7() == "A^ASAP^HL70485"
    assert order.orc.orc_16.ce_1.value == "positive"
    # The reason's '|' and '^' are escaped, so the segment keeps its fields.
    assert "read at arrival \\F\\ A\\S\\B" in order.orc.orc_16.ce_2.to_er7()
    assert order.ipc.ipc_3.to_er7() == ORDER.study_instance_uid
    assert "unscored -> positive" in order.nte.nte_3.to_er7()


def test_result_report_is_a_valid_oru_r01_with_probability_call_threshold_model_and_note() -> None:
    result = ChampionResult(12, "chest-xray", "chest-xray", "3", "scored", 0.934512, 0.5, "positive", None, utcnow())
    message = parse_message_strict(result_report(ENDPOINT, ORDER, result, control_id="MSR12", at=utcnow()))
    assert message.validate()
    obx = _obx(message)
    assert obx["PROB"][0] == "0.934512" and obx["CALL"][0] == "positive" and obx["THRESH"][0] == "0.500000"
    assert obx["MODEL"][0] == "chest-xray" and obx["MODELVER"][0] == "3"
    assert {method for _, method in obx.values()} == {"chest-xray 3"}
    first = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation[0]
    assert DECISION_SUPPORT_NOTE in first.nte.nte_3.to_er7()
    assert message.oru_r01_patient_result.oru_r01_patient.pid.pid_3.to_er7() == "PID-1"

    failed = ChampionResult(13, "chest-xray", "chest-xray", "3", "could_not_score", None, None, None,
                            "no frontal view", utcnow())
    message = parse_message_strict(result_report(ENDPOINT, ORDER, failed, control_id="MSR13", at=utcnow()))
    assert _obx(message)["CALL"][0] == "could not score"
    assert "no frontal view" in message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation[0].nte.nte_3.to_er7()


@pytest.mark.parametrize(
    ("dicom_name", "family", "given"),
    [
        ("Müller^Jürgen", "Müller", "Jürgen"),
        ("山田^太郎", "山田", "太郎"),
        # A DICOM PN with its component groups (alphabetic=ideographic=phonetic): XPN gets the alphabetic one.
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada", "Tarou"),
        ("=山田^太郎=やまだ^たろう", "山田", "太郎"),
        ("O'Brien & Sons|Jr^Mary~Ann\\B", "O'Brien & Sons|Jr", "Mary~Ann\\B"),
    ],
)
def test_names_and_text_reach_the_ris_as_written(dicom_name: str, family: str, given: str) -> None:
    """MSH-18 says UTF-8: letters beyond ASCII go as they are (not as \\Xhh\\, escaped twice), and only the
    delimiters are escaped, so the RIS reads back the name and the procedure text it was sent."""
    now = utcnow()
    order = StudyOrder("1.2.3", "ACC1", "PID-1", dicom_name, "DX", "Rx Tórax PA & lateral")
    change = PriorityChanged(1, "1.2.3", "ACC1", now, None, "unscored", now, "arrival order; Müller ^ 山田")
    er7 = priority_update(ENDPOINT, order, change, control_id="MSPC1", at=now)
    assert "\\X" not in er7
    message = parse_message_strict(er7)
    assert message.validate()
    # hl7apy finds the components and python-hl7 (the other common reader) undoes the escapes.
    unescape = hl7.parse(er7).unescape
    name = message.omi_o23_patient.pid.pid_5
    assert (unescape(name.xpn_1.fn_1.to_er7()), unescape(name.xpn_2.to_er7())) == (family, given)
    assert unescape(message.omi_o23_order.obr.obr_4.ce_2.to_er7()) == "Rx Tórax PA & lateral"
    assert unescape(message.omi_o23_order.nte.nte_3.to_er7()).endswith("arrival order; Müller ^ 山田")


@pytest.fixture
def ris() -> Iterator[RisListener]:
    peer = RisListener("127.0.0.1", free_port())
    peer.start()
    yield peer
    if peer.server is not None:
        peer.stop()


def test_feed_sends_in_order_sets_aside_a_rejection_and_waits_out_an_outage(app: FastAPI, ris: RisListener) -> None:
    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    take_in_ris_messages(factory, ENDPOINT)  # the feed's first start: cursors begin here
    with session_scope(factory) as session:
        for score in (0.9, 0.1):
            add_result(session, make_study(session), score=score)
        recompute_worklist(session, policy)
    assert take_in_ris_messages(factory, ENDPOINT) == 4  # two priority changes, two results
    assert take_in_ris_messages(factory, ENDPOINT) == 0  # built once
    sender = RisSender(ris.host, ris.port, timeout_s=30)  # the test RIS validates strictly: slow under load
    retry = RetryPolicy(retry_s=0.0, max_attempts=3)
    keys = _keys(factory)
    rejected_id = next(k for k in keys if k.startswith("MSR"))
    ris.answer = lambda control_id: "AR" if control_id == rejected_id else "AA"

    assert dispatch(factory, CHANNEL, sender, retry) == 3
    assert [r.control_id for r in ris.received] == keys  # in the order they were made
    with session_scope(factory) as session:
        states = {m.key: (m.state, m.last_error) for m in session.scalars(select(OutboxMessage))}
    assert states[rejected_id][0] == "rejected" and "AR" in states[rejected_id][1]
    assert {state for key, (state, _) in states.items() if key != rejected_id} == {"sent"}

    # An AE is retried; the RIS going away stops the pass and loses nothing.
    with session_scope(factory) as session:
        study = make_study(session)
        add_result(session, study, score=0.95)
        recompute_worklist(session, policy)
    take_in_ris_messages(factory, ENDPOINT)
    ris.answer = lambda control_id: "AE"
    assert dispatch(factory, CHANNEL, sender, RetryPolicy(retry_s=3600, max_attempts=3)) == 0
    ris.stop()
    with session_scope(factory) as session:
        for message in session.scalars(select(OutboxMessage).where(OutboxMessage.state == "pending")):
            message.next_attempt_at = utcnow() - timedelta(seconds=1)
    assert dispatch(factory, CHANNEL, sender, retry) == 0
    with session_scope(factory) as session:
        pending = session.scalars(
            select(OutboxMessage).where(OutboxMessage.state == "pending").order_by(OutboxMessage.id)
        ).all()
        assert len(pending) == 2 and pending[0].attempts == 2 and "RIS" in (pending[0].last_error or "")
    ris.answer = lambda control_id: "AA"
    ris.start()
    assert dispatch(factory, CHANNEL, sender, retry) == 2
    accepted = [r.control_id for r in ris.accepted()]
    assert len(accepted) == len(set(accepted)) == 5  # every message but the rejected one, none twice


def _keys(factory: object) -> list[str]:
    with session_scope(factory) as session:  # type: ignore[arg-type]
        return list(session.scalars(select(OutboxMessage.key).order_by(OutboxMessage.id)))


def test_a_shadow_champion_result_is_not_reported_to_the_ris(app: FastAPI) -> None:
    factory = app.state.session_factory
    take_in_ris_messages(factory, ENDPOINT)  # the feed's first start
    with session_scope(factory) as session:
        add_result(session, make_study(session), score=0.9, steering="shadow")
        shown = add_result(session, make_study(session), score=0.8, steering="raise-only")
        shown_id = shown.id
    assert take_in_ris_messages(factory, ENDPOINT) == 1
    with session_scope(factory) as session:
        assert [m.key for m in session.scalars(select(OutboxMessage))] == [f"MSR{shown_id}"]
    assert take_in_ris_messages(factory, ENDPOINT, include_shadow=True) == 1  # MEDSCREEN_WRITEBACK_SHADOW


def test_settling_goes_to_the_ris_as_asap_and_a_shadow_score_does_not(app: FastAPI) -> None:
    """Nothing of a shadow model reaches the RIS: a shadow mammography result had been sent as an OMI^O23 carrying
    the shadow score. A study settling past its cap goes back ahead of later positives, so the RIS is told (ASAP,
    start time still its arrival); it had not been, and held it routine behind them (review 3, triage 6)."""
    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    take_in_ris_messages(factory, ENDPOINT)  # the feed's first start
    arrived = utcnow() - timedelta(minutes=5)
    with session_scope(factory) as session:
        study = make_study(session, arrived=arrived, modality="MG", task="mammography")
        recompute_worklist(session, policy, now=arrived + timedelta(seconds=20))  # listed, not scored yet
        add_result(session, study, score=0.91, steering="shadow")
        recompute_worklist(session, policy, now=arrived + timedelta(minutes=2))  # shadow: stays in its place
    with session_scope(factory) as session:
        recompute_worklist(session, policy, now=arrived + timedelta(minutes=200))  # past the cap: settles
        changes = session.scalars(select(PriorityChange).order_by(PriorityChange.id)).all()
        assert [(c.from_tier, c.to_tier) for c in changes] == [(None, "unscored"), ("unscored", "unscored")]
        assert "settled in its arrival place" in changes[-1].reason  # recorded on the worklist
    assert take_in_ris_messages(factory, ENDPOINT) == 2  # the listing and the settling
    with session_scope(factory) as session:
        messages = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [m.key for m in messages] == [f"MSPC{c.id}" for c in changes]
        assert "0.91" not in "".join(m.payload for m in messages)
        timings = [parse_message_strict(m.payload).omi_o23_order.omi_o23_timing.tq1 for m in messages]
    assert [t.tq1_9.to_er7()[0] for t in timings] == ["R", "A"]
    assert timings[0].tq1_7.to_er7() == timings[1].tq1_7.to_er7() == arrived.strftime("%Y%m%d%H%M%S+0000")

    # A study first listed after its shadow result is sent (it is new to the RIS), without the score.
    with session_scope(factory) as session:
        late = make_study(session, arrived=utcnow(), modality="MG", task="mammography", order_priority="STAT")
        add_result(session, late, score=0.87, steering="shadow")
        recompute_worklist(session, policy)
    assert take_in_ris_messages(factory, ENDPOINT) == 1
    with session_scope(factory) as session:
        payload = session.scalars(select(OutboxMessage.payload).order_by(OutboxMessage.id.desc())).first() or ""
    assert "ORC|XO|" in payload and "mammography-champion v3" in payload and "0.87" not in payload


def test_an_older_priority_is_not_replayed_after_a_newer_one_was_sent(
    app: FastAPI, ris: RisListener, client: TestClient, add_user: AddUser
) -> None:
    """A study's listing was refused by the RIS and set aside; its raise to the top tier was sent after it.
    Replaying the set-aside listing had been accepted (200) and sent the RIS the study's older priority, so
    the RIS showed a raised study as routine. An OMI^O23 whose study has a newer one is refused (409)."""
    engineer = add_user("erin", "ml-engineer")
    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    take_in_ris_messages(factory, ENDPOINT)  # the feed's first start
    arrived = utcnow() - timedelta(minutes=5)
    with session_scope(factory) as session:
        study = make_study(session, arrived=arrived)
        make_study(session, arrived=arrived)  # another study, listed with it
        recompute_worklist(session, policy, now=arrived + timedelta(seconds=20))  # both listed, unscored
    take_in_ris_messages(factory, ENDPOINT)
    listing, other_listing = _keys(factory)
    ris.answer = lambda control_id: "AR" if control_id in (listing, other_listing) else "AA"
    sender = RisSender(ris.host, ris.port, timeout_s=30)  # the test RIS validates strictly: slow under load
    retry = RetryPolicy(retry_s=0.0, max_attempts=3)
    assert dispatch(factory, CHANNEL, sender, retry) == 0  # both listings set aside
    with session_scope(factory) as session:
        add_result(session, session.get(type(study), study.id), score=0.95)
        recompute_worklist(session, policy, now=arrived + timedelta(minutes=2))  # raised
    take_in_ris_messages(factory, ENDPOINT)
    assert dispatch(factory, CHANNEL, sender, retry) == 2  # the raise (OMI) and the result (ORU)
    with session_scope(factory) as session:
        ids = {m.key: m.id for m in session.scalars(select(OutboxMessage))}

    refused = client.post(f"/api/outbox/{ids[listing]}/replay", headers=engineer)
    assert refused.status_code == 409, refused.text
    assert "superseded" in refused.json()["detail"]
    with session_scope(factory) as session:
        assert session.get(OutboxMessage, ids[listing]).state == "rejected"  # type: ignore[union-attr]
    # The other study has nothing newer: its listing is offered again.
    assert client.post(f"/api/outbox/{ids[other_listing]}/replay", headers=engineer).status_code == 200


def test_a_study_outside_intended_use_is_reported_as_not_scored_not_as_a_failure() -> None:
    """The ORU had said CALL 'could not score' (a technical failure, which invites a resend) for a study outside
    the model's intended use (review 3, honesty D8)."""
    reason = "no PA/AP view; chest-xray v1 is validated for those views only"
    result = ChampionResult(14, "chest-xray", "chest-xray", "1", "out_of_scope", None, None, None, reason, utcnow())
    er7 = result_report(ENDPOINT, ORDER, result, control_id="MSR14", at=utcnow())
    message = parse_message_strict(er7)
    assert message.validate()
    assert _obx(message)["CALL"][0] == "not scored: outside the model's intended use"
    note = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation[0].nte.nte_3.to_er7()
    assert hl7.parse(er7).unescape(note).endswith(f"not scored: outside the model's intended use: {reason}")
    assert "could not score" not in er7


def test_a_result_is_dated_by_its_study_not_by_when_it_was_scored() -> None:
    """OBR-7 (observation date/time) had been the scoring time; it is the study's date (DICOM StudyDate, which has no
    zone, so the date alone), and OBR-22 stays the time the result was made (review 3, time 4)."""
    scored_at = utcnow()
    result = ChampionResult(15, "chest-xray", "chest-xray", "3", "scored", 0.7, 0.5, "positive", None, scored_at)
    dated = replace(ORDER, study_date="20250115")
    message = parse_message_strict(result_report(ENDPOINT, dated, result, control_id="MSR15", at=scored_at))
    assert message.validate()
    obr = message.oru_r01_patient_result.oru_r01_order_observation.obr
    assert obr.obr_7.to_er7() == "20250115"
    assert obr.obr_22.to_er7() == scored_at.strftime("%Y%m%d%H%M%S+0000")
    undated = parse_message_strict(result_report(ENDPOINT, ORDER, result, control_id="MSR16", at=scored_at))
    assert undated.validate()
    assert not undated.oru_r01_patient_result.oru_r01_order_observation.obr.obr_7.to_er7()



@pytest.mark.parametrize("steering", ["shadow", "raise-only", "defer"])
def test_a_shadow_result_sent_by_the_sites_choice_is_preliminary_and_says_so(steering: str) -> None:
    """With MEDSCREEN_WRITEBACK_SHADOW a shadow version's result had gone as OBX 'CALL positive', final, and the NTE
    said only 'decision support, not a diagnosis' (review 3, honesty D4)."""
    result = ChampionResult(17, "mammography", "mammography", "1", "scored", 0.413, 0.315, "positive", None, utcnow(),
                            steering=steering)
    er7 = result_report(ENDPOINT, ORDER, result, control_id="MSR17", at=utcnow())
    message = parse_message_strict(er7)
    assert message.validate()
    group = message.oru_r01_patient_result.oru_r01_order_observation
    statuses = {observation.obx.obx_11.to_er7() for observation in group.oru_r01_observation}
    note = hl7.parse(er7).unescape(group.oru_r01_observation[0].nte.nte_3.to_er7())
    if steering == "shadow":
        assert statuses == {"P"} and group.obr.obr_25.to_er7() == "P"
        assert _obx(message)["STEER"][0] == "shadow" and SHADOW_NOTE in note
    else:
        assert statuses == {"F"} and group.obr.obr_25.to_er7() == "F"
        assert _obx(message)["STEER"][0] == steering and "shadow" not in er7


def test_a_rescored_study_sends_its_later_result_as_a_correction(app: FastAPI) -> None:
    """Both ORU^R01 of a re-scored study had gone with OBR-25 F: the RIS held two final results for one order
    (review 3, honesty D1)."""
    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        first = add_result(session, study, score=0.11)
        study.revision = 2
        second = add_result(session, study, score=0.999)
        older, later = champion_result(first), champion_result(second)
    assert (older.corrects, later.corrects) == (None, first.id)
    for result, status in ((older, "F"), (later, "C")):
        message = parse_message_strict(result_report(ENDPOINT, ORDER, result, control_id="MSR1", at=utcnow()))
        assert message.validate()
        group = message.oru_r01_patient_result.oru_r01_order_observation
        assert group.obr.obr_25.to_er7() == status
        assert {observation.obx.obx_11.to_er7() for observation in group.oru_r01_observation} == {status}


@pytest.mark.parametrize(("tier", "priority"), [("stat", "S"), ("positive", "A"), ("aged", "A"), ("negative", "R")])
def test_tq1_7_is_a_real_time_at_or_after_arrival(tier: str, priority: str) -> None:
    """TQ1-7 had carried the list's sort key (arrival - lead - raise): a STAT study arriving at 10:00 showed due
    25.5 h earlier, a positive 90 min before it arrived (review 3, time 3). A deferred negative's due time (arrival +
    cap) is a real time and goes as it is."""
    arrived = utcnow()
    due = {"stat": arrived - timedelta(hours=25, minutes=30), "positive": arrived - timedelta(minutes=90),
           "aged": arrived - timedelta(minutes=90), "negative": arrived + timedelta(minutes=90)}[tier]
    change = PriorityChanged(8, ORDER.study_instance_uid, ORDER.accession_number, arrived, "unscored", tier, due,
                             "reason", arrived_at=arrived)
    message = parse_message_strict(priority_update(ENDPOINT, ORDER, change, control_id="MSPC8", at=arrived))
    assert message.validate()
    tq1 = message.omi_o23_order.omi_o23_timing.tq1
    assert tq1.tq1_7.to_er7() == max(due, arrived).strftime("%Y%m%d%H%M%S+0000")
    assert tq1.tq1_9.to_er7().startswith(f"{priority}^")
    unknown = parse_message_strict(priority_update(ENDPOINT, ORDER, replace(change, arrived_at=None),
                                                   control_id="MSPC9", at=arrived))
    assert unknown.omi_o23_order.omi_o23_timing.tq1.tq1_7.to_er7() == (due.strftime("%Y%m%d%H%M%S+0000")
                                                                      if tier == "negative" else "")


def test_the_feed_sends_study_date_steering_and_corrections(app: FastAPI) -> None:
    factory = app.state.session_factory
    take_in_ris_messages(factory, ENDPOINT)  # the feed's first start
    with session_scope(factory) as session:
        study = make_study(session)
        study.study_date = "20250115"
        add_result(session, study, score=0.11)
        study.revision = 2
        add_result(session, study, score=0.999)
    assert take_in_ris_messages(factory, ENDPOINT) == 2
    with session_scope(factory) as session:
        payloads = list(session.scalars(select(OutboxMessage.payload).order_by(OutboxMessage.id)))
    obrs = [parse_message_strict(p).oru_r01_patient_result.oru_r01_order_observation.obr for p in payloads]
    assert [o.obr_7.to_er7() for o in obrs] == ["20250115", "20250115"]
    assert [o.obr_25.to_er7() for o in obrs] == ["F", "C"]
    assert all("STEER" in p for p in payloads)
