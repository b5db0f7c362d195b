"""HL7 v2.5.1 messages for the RIS, built with hl7apy and validated against the standard's structures.

- a priority change: ``OMI^O23`` (imaging order, ORC-1 ``XO`` change order) with the new priority in TQ1-9
  (HL7 table 0485: S stat, A ASAP, R routine; a study settled after its aging cap is ASAP), the start time in
  TQ1-7 (arrival, or arrival + aging cap for a deferred negative; never before arrival), the worklist tier and the reason in
  ORC-16 and an NTE, and the Study Instance UID in IPC-3 so a RIS finds the order by accession or study;
- a champion result: ``ORU^R01`` whose OBX segments carry the probability, the call, the operating point and
  the model name, version and steering right, with the NTE "decision support, not a diagnosis"; a shadow
  version's result (sent only with ``MEDSCREEN_WRITEBACK_SHADOW``) is preliminary (OBR-25, OBX-11 ``P``) and its
  NTE says "shadow model: recorded for monitoring, not a finding".

Free text has its delimiters escaped (``\\F\\`` for ``|``, ...) so that a reason holding ``|`` or ``^`` cannot break a
segment; other characters go as they are, in UTF-8 (MSH-18).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from inference.fhir_results import neighbours, study_day
from inference.tables import ScoreResult
from service.lifecycle import SteeringRight, StudyStatus
from worklist.ris import PriorityChanged

__all__ = [
    "Hl7Endpoint",
    "StudyOrder",
    "ChampionResult",
    "Ack",
    "DECISION_SUPPORT_NOTE",
    "SHADOW_NOTE",
    "champion_result",
    "TIER_PRIORITY",
    "priority_update",
    "result_report",
    "parse_ack",
    "parse_message_strict",
]

VERSION = "2.5.1"
DECISION_SUPPORT_NOTE = "decision support, not a diagnosis"
NOT_SCORED_OUT_OF_SCOPE = "not scored: outside the model's intended use"
SHADOW_NOTE = "shadow model: recorded for monitoring, not a finding"
_LOCAL = "99MEDSCREEN"
# Worklist tier -> HL7 table 0485 priority; the same reading as FHIR_TASK_PRIORITY.
TIER_PRIORITY = {
    "stat": ("S", "Stat"),
    "urgent": ("A", "ASAP"),
    "positive": ("A", "ASAP"),
    "aged": ("A", "ASAP"),
    "unscored": ("R", "Routine"),
    "negative": ("R", "Routine"),
}
# What a RIS is told (worklist.ris.reading_priority) -> HL7 table 0485; it has no level between Stat and ASAP.
READING_PRIORITY = {"stat": ("S", "Stat"), "urgent": ("A", "ASAP"), "asap": ("A", "ASAP"), "routine": ("R", "Routine")}
# Only the delimiters and the escape character are escaped. MSH-18 declares UTF-8 and the frames are sent
# in UTF-8, so "Müller" goes as it is: python-hl7's escape() had written it as M\Xfc\ller, which hl7apy
# escaped again, and the RIS showed M\Xfc\ller. Other control characters (C0, DEL and C1: Unicode's Cc) become
# spaces: they mean nothing in a name or a reason, and 0x0B and 0x1C frame MLLP.
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
_CONTROLS = {code: " " for code in [*range(0x20), *range(0x7F, 0xA0)]}
_TEXT = str.maketrans({**_CONTROLS, **_ESCAPES})


def _text(value: object, limit: int = 500) -> str:
    # Cut before escaping, so that a cut never splits an escape sequence.
    cut = " ".join(str(value).translate(_CONTROLS).split())[:limit]
    return cut.translate(_TEXT)


def _ts(at: datetime) -> str:
    # UTC, with the offset written out, so that a RIS in any zone reads the same instant.
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000") if at.tzinfo else at.strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class Hl7Endpoint:
    """MSH-3 to MSH-6: who sends and who receives."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str


@dataclass(frozen=True)
class StudyOrder:
    """What a RIS matches an order on. Patient identity is sent to the RIS, never logged."""

    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    modality: str
    study_description: str
    # DICOM StudyDate (DA, YYYYMMDD); "" when the study had none.
    study_date: str = ""


@dataclass(frozen=True)
class ChampionResult:
    result_id: int
    task: str
    model_name: str
    model_version: str
    outcome: str  # StudyStatus.scored, could_not_score or out_of_scope
    score: float | None
    threshold: float | None
    call: str | None
    reason: str | None
    created_at: datetime
    # The version's SteeringRight when it scored: a shadow result reaches the RIS only by the site's choice
    # (MEDSCREEN_WRITEBACK_SHADOW) and goes as preliminary, saying what it is.
    steering: str = SteeringRight.raise_only.value
    # The study's earlier result that this one replaces (a late image re-opened and re-scored the study).
    corrects: int | None = None
    # The study's later result that replaces this one, by (revision, id): a result of an older revision is never
    # the RIS's current one, whenever it was stored.
    superseded_by: int | None = None


def champion_result(result: ScoreResult) -> ChampionResult:
    """What the ORU says of one stored champion result; its neighbours in the study are ordered by (revision, id)."""
    before, after = neighbours(result)
    return ChampionResult(
        result_id=result.id,
        task=result.task,
        model_name=result.model_name,
        model_version=result.model_version,
        outcome=result.outcome,
        score=result.score,
        threshold=result.threshold,
        call=result.call,
        reason=result.reason,
        created_at=result.created_at,
        steering=result.steering or SteeringRight.raise_only.value,
        corrects=before.id if before else None,
        superseded_by=after.id if after else None,
    )


@dataclass(frozen=True)
class Ack:
    code: str  # AA accepted, AE error (retry), AR rejected; CA/CE/CR in enhanced mode
    control_id: str
    text: str


def _message(structure: str, endpoint: Hl7Endpoint, control_id: str, at: datetime) -> Message:
    message = Message(structure, version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msh = message.msh
    msh.msh_3 = _text(endpoint.sending_application, 180)
    if endpoint.sending_facility:
        msh.msh_4 = _text(endpoint.sending_facility, 180)
    msh.msh_5 = _text(endpoint.receiving_application, 180)
    if endpoint.receiving_facility:
        msh.msh_6 = _text(endpoint.receiving_facility, 180)
    msh.msh_7 = _ts(at)
    code, trigger = structure.split("_")
    msh.msh_9 = f"{code}^{trigger}^{structure}"
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    # Original acknowledgement mode: MSH-15 and MSH-16 left empty (HL7 v2.5.1 2.9.2), so the RIS's one ACK (AA/AE/AR)
    # is its application's answer. They had said AL and NE, which declares enhanced mode: a RIS that honours it
    # answers CA once the message is stored and, as NE asks, never says whether its application took it; an order
    # the RIS refused (an unknown accession) was marked sent.
    msh.msh_18 = "UNICODE UTF-8"
    return message


def _patient(segment: object, order: StudyOrder) -> None:
    pid = segment
    pid.pid_3 = _text(order.patient_id or "UNKNOWN", 200)  # type: ignore[attr-defined]
    # DICOM and HL7 both separate name components with '^'. A DICOM PN may hold up to three component groups,
    # alphabetic=ideographic=phonetic; XPN has room for one, so the alphabetic group goes (the first group
    # holding a name, when a Japanese PN leaves the alphabetic one empty).
    name = next((group for group in order.patient_name.split("=") if group.strip("^ ")), "")
    if name:
        pid.pid_5 = _xpn(name)  # type: ignore[attr-defined]


def _xpn(name: str) -> str:
    """One DICOM PN component group as an XPN: PN is family^given^middle^prefix^suffix (PS3.5 6.2), XPN is
    family^given^further given^suffix^prefix (HL7 2.A.89), so the last two change places."""
    family, given, middle, prefix, suffix = (name.split("^") + [""] * 5)[:5]
    return "^".join(_text(part, 60) for part in (family, given, middle, suffix, prefix)).rstrip("^")


def priority_update(
    endpoint: Hl7Endpoint, order: StudyOrder, change: PriorityChanged, *, control_id: str, at: datetime
) -> str:
    """``OMI^O23`` telling the RIS the study's new reading priority and why."""
    message = _message("OMI_O23", endpoint, control_id, at)
    patient = message.add_group("OMI_O23_PATIENT")
    _patient(patient.pid, order)
    group = message.add_group("OMI_O23_ORDER")
    accession = _text(order.accession_number or order.study_instance_uid, 199)
    group.orc.orc_1 = "XO"
    group.orc.orc_3 = accession
    group.orc.orc_5 = "SC"
    group.orc.orc_9 = _ts(change.at)
    group.orc.orc_16 = f"{_text(change.to_tier, 20)}^{_text(change.reason, 199)}^{_LOCAL}"
    timing = group.add_group("OMI_O23_TIMING")
    # TQ1-9 carries the list's order (a settled study is ASAP, as the positives it goes back ahead of); TQ1-7 is a
    # real start time at or after arrival, never the list's sort key, which lies before it.
    priority, name = READING_PRIORITY[change.reading_priority]
    start = change.start_at
    if start is not None:
        timing.tq1.tq1_7 = _ts(start)
    timing.tq1.tq1_9 = f"{priority}^{name}^HL70485"
    group.obr.obr_3 = accession
    group.obr.obr_4 = f"{_text(order.modality or 'OT', 20)}^{_text(order.study_description or 'imaging study', 199)}^{_LOCAL}"
    note = group.add_segment("NTE")
    note.nte_1 = "1"
    note.nte_3 = _text(f"worklist priority {change.from_tier or 'new'} -> {change.to_tier}: {change.reason}", 2000)
    ipc = group.ipc
    ipc.ipc_1 = accession
    ipc.ipc_2 = accession
    ipc.ipc_3 = order.study_instance_uid
    ipc.ipc_4 = accession
    if order.modality:
        ipc.ipc_5 = f"{_text(order.modality, 16)}^^DCM"
    return str(message.to_er7())


def _not_scored(result: ChampionResult) -> str:
    # Outside intended use is not a failure: the model's answer does not apply to this patient, and a RIS user
    # reading "could not score" would resend the study.
    return NOT_SCORED_OUT_OF_SCOPE if result.outcome == StudyStatus.out_of_scope else "could not score"


def result_report(endpoint: Hl7Endpoint, order: StudyOrder, result: ChampionResult, *, control_id: str, at: datetime) -> str:
    """``ORU^R01`` for one champion result; a study that could not be scored says so and why."""
    message = _message("ORU_R01", endpoint, control_id, at)
    patient_result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = patient_result.add_group("ORU_R01_PATIENT")
    _patient(patient.pid, order)
    order_observation = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    accession = _text(order.accession_number or order.study_instance_uid, 199)
    obr = order_observation.obr
    obr.obr_3 = accession
    obr.obr_4 = f"{_text(result.task, 20)}^AI triage {_text(result.task, 40)}^{_LOCAL}"
    # OBR-7 is when the images were taken (the date alone: DICOM keeps StudyDate without a zone); OBR-22 when
    # the result was made. A backfilled film of last year had been dated the day the model ran.
    day = study_day(order.study_date)
    if day:
        obr.obr_7 = day.strftime("%Y%m%d")
    obr.obr_22 = _ts(result.created_at)
    obr.obr_24 = "RAD"
    shadow = result.steering == SteeringRight.shadow
    # HL7 table 0085: a result replacing the study's earlier one goes as a correction (C), so the RIS keeps one
    # current result for the order; it had received two finals.
    status = "P" if shadow else "C" if result.corrects is not None else "F"
    obr.obr_25 = status
    model = f"{_text(result.model_name, 60)} {_text(result.model_version, 20)}"
    observations: list[tuple[str, str, str, str, str]] = []  # (value type, code^text, value, units, range)
    if result.outcome == StudyStatus.scored and result.score is not None:
        observations.append(("NM", f"PROB^Probability of finding^{_LOCAL}", f"{result.score:.6f}", "1^no units^UCUM", ""))
        call = result.call or ""
        observations.append(("ST", f"CALL^Call at the model's operating point^{_LOCAL}", _text(call), "", ""))
        if result.threshold is not None:
            observations.append(
                ("NM", f"THRESH^Operating point (threshold)^{_LOCAL}", f"{result.threshold:.6f}", "1^no units^UCUM", "")
            )
    else:
        observations.append(("ST", f"CALL^Call at the model's operating point^{_LOCAL}", _not_scored(result), "", ""))
    observations.append(("ST", f"MODEL^AI model name^{_LOCAL}", _text(result.model_name, 60), "", ""))
    observations.append(("ST", f"MODELVER^AI model version^{_LOCAL}", _text(result.model_version, 20), "", ""))
    observations.append(("ST", f"STEER^AI model steering right^{_LOCAL}", _text(result.steering, 20), "", ""))
    for index, (value_type, code, value, units, _range) in enumerate(observations, start=1):
        group = order_observation.add_group("ORU_R01_OBSERVATION")
        obx = group.obx
        obx.obx_1 = str(index)
        obx.obx_2 = value_type
        obx.obx_3 = code
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        obx.obx_11 = status
        obx.obx_14 = _ts(result.created_at)
        # OBX-17 observation method and OBX-18 equipment: the algorithm that made the observation.
        obx.obx_17 = f"AI^{model}^{_LOCAL}"
        obx.obx_18 = f"{model}^{_LOCAL}"
        if index == 1:
            note = group.add_segment("NTE")
            note.nte_1 = "1"
            text = f"{SHADOW_NOTE}; {DECISION_SUPPORT_NOTE}. {model}" if shadow else f"{DECISION_SUPPORT_NOTE}. {model}"
            if result.outcome != StudyStatus.scored:
                text += f": {_not_scored(result)}: {result.reason or 'no reason given'}"
            note.nte_3 = _text(text, 2000)
    return str(message.to_er7())


def parse_message_strict(text: str) -> Message:
    """Parse ER7 with the standard's structures (what the test's RIS does with every message)."""
    return parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)


def parse_ack(text: str) -> Ack:
    """The code, control id and reason of an ACK, read from its MSA (and ERR) segments by their delimiters.

    Not with hl7apy: it knows a message only by its version's tables, and an ACK it could not place (segments ended
    by LF, MSH-12 empty or a version it lacks, 2.9) was 'not an HL7 ACK'. The message the RIS had taken was then
    sent ``MEDSCREEN_RIS_MAX_ATTEMPTS`` times and set aside as rejected. Raises ValueError when it is no ACK."""
    segments = [segment.strip() for segment in re.split(r"\r\n|\r|\n", text) if segment.strip()]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise ValueError("the answer does not begin with an MSH segment")
    field, component = segments[0][3], segments[0][4]
    msa = next((s.split(field) for s in segments[1:] if s.split(field)[0] == "MSA"), None)
    if msa is None or len(msa) < 3 or not msa[1]:
        raise ValueError("the answer has no MSA segment with an acknowledgment code")
    said = msa[3] if len(msa) > 3 else ""
    return Ack(code=msa[1].split(component)[0], control_id=msa[2].split(component)[0],
               text="; ".join(filter(None, [said, *_errors(segments)])))


def _errors(segments: list[str]) -> list[str]:
    """What the ACK's ERR segments say, one line each. Since v2.5 MSA-3 is kept only for backward compatibility and a
    RIS says why in ERR (ERR-8 user message, ERR-3 error code, ERR-2 location; before v2.5 ERR-1 held the location
    and the code): a NAK whose MSA-3 was empty had been set aside as 'rejected it (AR): ' with no reason."""
    field, component, subcomponent = segments[0][3], segments[0][4], segments[0][7:8] or "&"
    found = []
    for segment in segments[1:]:
        fields = segment.split(field)
        if fields[0] != "ERR":
            continue
        fields += [""] * (9 - len(fields))
        old_style = fields[1].split(component) + [""] * 4  # ELD: segment^sequence^field^code&text&system
        code = fields[3] or old_style[3].replace(subcomponent, component)
        code_text = " ".join(part for part in code.split(component)[:2] if part)
        location = (fields[2] or fields[1]).split(component) + ["", "", ""]  # segment^sequence^field position
        where = f"{location[0]}-{location[2]}" if location[0] and location[2] else location[0]
        words = [fields[8], code_text, f"at {where}" if where else ""]
        line = ", ".join(word for word in words if word)
        if line:
            found.append(line)
    return found
