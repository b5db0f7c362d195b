"""The MLLP client: one HL7 message out, the RIS's acknowledgement back, within a timeout.

Framing is python-hl7's (``hl7.mllp``); the answer is read up to its end block and taken from its last start
block. One connection per message, as hl7apy's and many RIS listeners expect. Anything that keeps the answer from arriving (refused connection,
timeout, connection closed, a malformed block) is :class:`PeerUnreachable`: the message is offered again.
"""

from __future__ import annotations

import asyncio
import contextlib

from hl7.mllp import InvalidBlockError, open_hl7_connection

from service.errors import PeerUnreachable

__all__ = ["send_mllp"]

_START_BLOCK = b"\x0b"
_END_BLOCK = b"\x1c\r"


async def _exchange(host: str, port: int, message: str, timeout: float) -> str:
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, encoding="utf-8"), timeout)
    try:
        writer.writeblock(message.encode("utf-8"))
        await asyncio.wait_for(writer.drain(), timeout)
        block: bytes = await asyncio.wait_for(reader.readuntil(_END_BLOCK), timeout)
        # Bytes before the start block (a CR LF left by the listener, a keep-alive) are not the answer and are
        # dropped, as HAPI and Mirth listeners do. python-hl7's readblock refused the block: the message the RIS had
        # taken was offered again every retry without limit, and every message after it waited behind it for good.
        start = block.rfind(_START_BLOCK)
        if start < 0:
            raise InvalidBlockError("the answer has no MLLP start block <VT>")
        return block[start + 1 : -len(_END_BLOCK)].decode("utf-8", errors="replace")
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


def send_mllp(host: str, port: int, message: str, *, timeout: float) -> str:
    """Send ``message`` (ER7, segments separated by CR) and return the answer's ER7."""
    try:
        return asyncio.run(_exchange(host, port, message, timeout))
    except TimeoutError as exc:
        raise PeerUnreachable(f"no answer from the RIS at {host}:{port} within {timeout:.0f} s") from exc
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, InvalidBlockError, ValueError) as exc:
        raise PeerUnreachable(f"RIS at {host}:{port}: {type(exc).__name__}: {exc}") from exc
