"""The MLLP client: one HL7 message out, the RIS's acknowledgement back, within a timeout.

Framing and reading of the answer block are python-hl7's (``hl7.mllp``); one connection per message, as
hl7apy's and many RIS listeners expect. Anything that keeps the answer from arriving (refused connection,
timeout, connection closed, a malformed block) is :class:`PeerUnreachable`: the message is offered again.
"""

from __future__ import annotations

import asyncio
import contextlib

from hl7.mllp import InvalidBlockError, open_hl7_connection

from service.errors import PeerUnreachable

__all__ = ["send_mllp"]


async def _exchange(host: str, port: int, message: str, timeout: float) -> str:
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, encoding="utf-8"), timeout)
    try:
        writer.writeblock(message.encode("utf-8"))
        await asyncio.wait_for(writer.drain(), timeout)
        block: bytes = await asyncio.wait_for(reader.readblock(), timeout)
        return block.decode("utf-8", errors="replace")
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
    except (OSError, asyncio.IncompleteReadError, InvalidBlockError, ValueError) as exc:
        raise PeerUnreachable(f"RIS at {host}:{port}: {type(exc).__name__}: {exc}") from exc
