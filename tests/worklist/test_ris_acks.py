"""What the RIS's answer does to a message: the ACKs and NAKs real interface engines send, read by ``RisSender``
against the test RIS (``ris_peer``: hl7apy's MLLP server, parsing each message strictly as v2.5.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.db import utcnow
from service.errors import DeliveryFailed
from service.outbox import Outgoing
from tests.conftest import free_port
from tests.worklist.ris_peer import RisListener
from worklist.hl7_messages import ChampionResult, Hl7Endpoint, StudyOrder, parse_ack, result_report
from worklist.ris_feed import CONTENT_TYPE, RisSender

ENDPOINT = Hl7Endpoint("MEDSCREEN", "ST ELSEWHERE", "RIS", "ST ELSEWHERE")
ORDER = StudyOrder("1.2.826.0.1.3680043.8.498.1", "ACC000042", "PID-1", "Doe^Jane", "DX", "CHEST PA")


@pytest.fixture(scope="module")
def ris() -> Iterator[RisListener]:
    peer = RisListener("127.0.0.1", free_port())
    peer.start()
    yield peer
    peer.stop()


def _oru(key: str) -> Outgoing:
    result = ChampionResult(17, "chest-xray", "chest-xray", "3", "scored", 0.93, 0.5, "positive", None, utcnow())
    return Outgoing(17, key, f"ORU^R01 {key}", CONTENT_TYPE,
                    result_report(ENDPOINT, ORDER, result, control_id=key, at=utcnow()))


@pytest.mark.parametrize("code", ["AR", "AE"])
def test_a_nak_giving_its_reason_in_err_is_set_aside_or_retried_with_that_reason(ris: RisListener, code: str) -> None:
    """HL7 v2.5.1 keeps MSA-3 only for backward compatibility: a RIS says why in ERR (ERR-3 code, ERR-8 text). The
    rejected message had been set aside as 'the RIS rejected it (AR): ' with nothing after it."""
    ris.answer, ris.reason_in_err = (lambda control_id: code), True
    try:
        with pytest.raises(DeliveryFailed) as failed:
            RisSender(ris.host, ris.port, timeout_s=30)(_oru(f"MSR{code}"))
    finally:
        ris.answer, ris.reason_in_err = (lambda control_id: "AA"), False
    assert failed.value.permanent is (code == "AR")
    said = "the RIS rejected it (AR)" if code == "AR" else "the RIS answered AE"
    assert failed.value.reason == (f"{said}: patient not known to the test RIS, 204 Unknown key identifier, at PID-3")


@pytest.mark.parametrize(("key", "before"), [("MSRCRLF", "\r\n"), ("MSRLF", "\n\n"), ("MSRKEEP", "KEEPALIVE\r")])
def test_an_ack_after_bytes_before_its_start_block_is_read(ris: RisListener, key: str, before: str) -> None:
    """python-hl7's readblock refused an answer not starting with <VT>: the message the RIS had taken was offered
    again every retry, without limit (as a RIS that is down), and every message after it waited behind it."""
    ris.before_block = before
    try:
        answer = RisSender(ris.host, ris.port, timeout_s=30)(_oru(key))
    finally:
        ris.before_block = ""
    assert answer.startswith("MSH|") and f"MSA|AA|{key}" in answer
    assert [r.control_id for r in ris.received].count(key) == 1


def test_an_ack_whose_segments_end_in_lf_is_read(ris: RisListener) -> None:
    """hl7apy could not read it ('UnsupportedVersion The version 2.5.1\\nMSA'): 'not an HL7 ACK', so a message the
    RIS had taken was sent MEDSCREEN_RIS_MAX_ATTEMPTS times and then set aside as rejected."""
    ris.segment_end = "\n"
    try:
        answer = RisSender(ris.host, ris.port, timeout_s=30)(_oru("MSRLFACK"))
    finally:
        ris.segment_end = "\r"
    assert "\nMSA|AA|MSRLFACK" in answer


@pytest.mark.parametrize("version", ["2.9", "", "2.3", "2.5.1"])
def test_an_ack_is_read_whatever_version_it_declares(version: str) -> None:
    """An empty MSH-12, or a version hl7apy has no tables for (2.9), had made an accepting ACK 'not an HL7 ACK'."""
    ack = parse_ack(f"MSH|^~\\&|RIS|RAD|MEDSCREEN|RAD|20261130081502||ACK^R01^ACK|A1|P|{version}\rMSA|AA|MSR17\r")
    assert (ack.code, ack.control_id, ack.text) == ("AA", "MSR17", "")


@pytest.mark.parametrize("answer", ["", "HTTP/1.1 400 Bad Request\r\n", "MSH|^~\\&|RIS|RAD|||20261130||ACK|A1|P|2.5.1\r"])
def test_an_answer_that_is_no_ack_is_refused(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_ack(answer)


def test_the_ris_application_answers_each_message(ris: RisListener) -> None:
    """MSH-15 AL and MSH-16 NE had declared enhanced acknowledgement mode: a RIS honouring it answered CA once the
    message was stored and never said that its application had refused it, and the message was marked sent."""
    message = _oru("MSRMODE")
    ris.answer, ris.honours_enhanced_mode = (lambda control_id: "AR"), True
    try:
        with pytest.raises(DeliveryFailed) as failed:
            RisSender(ris.host, ris.port, timeout_s=30)(message)
    finally:
        ris.answer, ris.honours_enhanced_mode = (lambda control_id: "AA"), False
    assert failed.value.permanent and "(AR)" in failed.value.reason
    assert message.payload.split("\r")[0].split("|")[14:16] == ["", ""]  # original mode: no MSH-15, no MSH-16
