"""Names and text to the RIS in every character set: PID-5's name components in XPN's order, and control
characters (C0, DEL and C1) as spaces, as MSH-18's UTF-8 frames and the README promise."""

from __future__ import annotations

import pytest

from service.db import utcnow
from worklist.hl7_messages import (
    ChampionResult,
    Hl7Endpoint,
    StudyOrder,
    parse_message_strict,
    priority_update,
    result_report,
)
from worklist.ris import PriorityChanged

ENDPOINT = Hl7Endpoint("MEDSCREEN", "RADIOLOGY", "RIS", "RADIOLOGY")


def _pid5_both_messages(patient_name: str) -> list[object]:
    """PID-5 as the RIS reads it from the ORU^R01 result and from the OMI^O23 priority change."""
    now = utcnow()
    order = StudyOrder("1.2.826.0.1.3680043.8.498.1", "ACC1", "PID-1", patient_name, "DX", "Rx Tórax PA")
    result = ChampionResult(1, "chest-xray", "chest-xray", "1", "scored", 0.9, 0.5, "positive", None, now)
    oru = parse_message_strict(result_report(ENDPOINT, order, result, control_id="MSR1", at=now))
    change = PriorityChanged(7, order.study_instance_uid, "ACC1", now, "unscored", "positive", now, "positive")
    omi = parse_message_strict(priority_update(ENDPOINT, order, change, control_id="MSPC7", at=now))
    return [oru.oru_r01_patient_result.oru_r01_patient.pid.pid_5, omi.omi_o23_patient.pid.pid_5]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dicom_name", "xpn"),
    [
        # DICOM PN: family^given^middle^prefix^suffix; XPN: family^given^further given^suffix^prefix
        ("Müller^Jürgen^Karl^Dr.^Jr.", ("Müller", "Jürgen", "Karl", "Jr.", "Dr.")),
        ("Smith^Anne^^Prof.", ("Smith", "Anne", "", "", "Prof.")),
        ("Smith^Anne^^^III", ("Smith", "Anne", "", "III", "")),
        ("Yamada^Tarou^^Dr.=山田^太郎=やまだ^たろう", ("Yamada", "Tarou", "", "", "Dr.")),
    ],
)
def test_pid_5_takes_the_prefix_and_suffix_in_xpn_order(dicom_name: str, xpn: tuple[str, ...]) -> None:
    for pid_5 in _pid5_both_messages(dicom_name):
        components = (
            pid_5.xpn_1.fn_1.to_er7(),
            pid_5.xpn_2.value,
            pid_5.xpn_3.value,
            pid_5.xpn_4.value,
            pid_5.xpn_5.value,
        )  # type: ignore[attr-defined]
        assert tuple(value or "" for value in components) == xpn


def test_every_control_character_becomes_a_space_c1_included() -> None:
    # C0, DEL and C1 (U+0080-U+009F): a C1 control had gone into PID-5 as it was (UTF-8 C2 8A).
    controls = "".join(chr(code) for code in [*range(0x20), *range(0x7F, 0xA0)])
    now = utcnow()
    order = StudyOrder("1.2.3", "A1", "P1", f"Šimková{controls}X^Zoë", "DX", "Rx Tórax")
    result = ChampionResult(1, "chest-xray", "chest-xray", "1", "scored", 0.9, 0.5, "positive", None, now)
    er7 = result_report(ENDPOINT, order, result, control_id="MSR1", at=now)
    segments = er7.split("\r")
    assert not any(character in segment for segment in segments for character in controls)
    assert [s for s in segments if s.startswith("PID")][0].endswith("||Šimková X^Zoë")
