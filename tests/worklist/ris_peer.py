"""A real RIS stand-in for the tests: hl7apy's MLLP server, parsing every message strictly against HL7 v2.5.1.

It answers ``ACK`` with AA, or with the code the test asks for (``answer``: a function of the message
control id returning AA/AE/AR), and keeps every message it accepted, in arrival order. A NAK says why in MSA-3,
or, with ``reason_in_err``, as a v2.5.1 RIS does: in an ERR segment (ERR-3 code, ERR-8 text), MSA-3 left empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer

from worklist.hl7_messages import parse_message_strict


@dataclass
class Received:
    control_id: str
    structure: str
    message: Message
    er7: str
    answered: str


@dataclass
class RisListener:
    host: str
    port: int
    answer: Callable[[str], str] = lambda control_id: "AA"
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reason_in_err: bool = False
    # Sent before the answer's MLLP start block (what some listeners leave there: a CR LF, a keep-alive).
    before_block: str = ""
    # What ends each segment of the answer: HL7 says CR; some listeners write LF.
    segment_end: str = "\r"
    # HL7 v2.5.1 2.9.3: a message with MSH-15 or MSH-16 valued is in enhanced mode; such a RIS answers CA (committed)
    # and sends its application's answer only as MSH-16 asks.
    honours_enhanced_mode: bool = False
    server: MLLPServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        ris = self

        class Handler(AbstractHandler):
            def reply(self) -> str:
                message = parse_message_strict(self.incoming_message)
                assert message.validate(), "message does not follow the HL7 v2.5.1 structure"
                control_id = message.msh.msh_10.value
                code = ris.answer(control_id)
                if ris.honours_enhanced_mode and (message.msh.msh_15.to_er7() or message.msh.msh_16.to_er7()):
                    code = "CA"
                ris.received.append(
                    Received(control_id, message.msh.msh_9.msg_3.value, message, self.incoming_message, code)
                )
                answer = ack(message, code, reason_in_err=ris.reason_in_err).replace("\r", ris.segment_end)
                return ris.before_block + "\x0b" + answer + "\x1c\r"

        class ErrorHandler(AbstractErrorHandler):
            def reply(self) -> str:
                ris.errors.append(f"{type(self.exc).__name__}: {self.exc}")
                raise self.exc

        self.server = MLLPServer(self.host, self.port, {
            "OMI^O23^OMI_O23": (Handler,), "ORU^R01^ORU_R01": (Handler,), "ERR": (ErrorHandler,),
        }, timeout=10)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.server = None

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.answered == "AA"]


def ack(message: Message, code: str, *, reason_in_err: bool = False) -> str:
    answer = Message("ACK", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    answer.msh.msh_3 = message.msh.msh_5.value or "RIS"
    answer.msh.msh_5 = message.msh.msh_3.value
    answer.msh.msh_7 = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    answer.msh.msh_9 = "ACK^" + message.msh.msh_9.msg_2.value + "^ACK"
    answer.msh.msh_10 = "ACK" + message.msh.msh_10.value
    answer.msh.msh_11 = "P"
    answer.msh.msh_12 = "2.5.1"
    answer.msa.msa_1 = code
    answer.msa.msa_2 = message.msh.msh_10.value
    if code != "AA" and reason_in_err:
        error = answer.add_segment("ERR")
        error.err_2 = "PID^1^3"
        error.err_3 = "204^Unknown key identifier^HL70357"
        error.err_4 = "E"
        error.err_8 = "patient not known to the test RIS"
    elif code != "AA":
        answer.msa.msa_3 = "refused by the test RIS"
    return str(answer.to_er7())
