"""Security headers on every response, set in one place.

Every answer gets ``nosniff``, no referrer and no framing; answers that do not say otherwise get
``Cache-Control: no-store`` (API answers carry patient data, and a shared workstation's browser cache must
not keep them). An HTML page without its own Content Security Policy gets one that allows its own inline
``<script>``/``<style>`` blocks by hash and nothing else inline, loads only from this server, and forbids
framing (so its buttons cannot be clickjacked). Pages that set their own policy keep it.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "attachment", "html_policy"]

_ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
_API_POLICY = "default-src 'none'; frame-ancestors 'none'"
_INLINE = re.compile(rb"<(script|style)(?:\s[^>]*)?>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)


_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value for a download whose name is built from request input.

    Only letters, digits, dot, dash and underscore survive: a quote cannot add a parameter and CR/LF
    cannot end the header (which made the server drop the connection).
    """
    safe = _UNSAFE_IN_FILENAME.sub("_", filename).strip("._") or "download"
    return f'attachment; filename="{safe[:120]}"'


def html_policy(document: bytes) -> str:
    """A CSP for ``document``: same-origin only, its own inline blocks by sha256, no framing."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(document):
        if body.strip():
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            hashes[kind.decode().lower()].append(f"'sha256-{digest}'")
    return (
        "default-src 'self'; "
        f"script-src 'self' {' '.join(hashes['script'])}".rstrip() + "; "
        f"style-src 'self' {' '.join(hashes['style'])}".rstrip() + "; "
        "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-store")
                if "content-security-policy" not in headers:
                    if headers.get("content-type", "").startswith("text/html"):
                        held = message  # the policy hashes the inline blocks: wait for the body
                        return
                    headers["content-security-policy"] = _API_POLICY
                await send(message)
                return
            if held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                document = b"".join(chunks)
                MutableHeaders(scope=held)["content-security-policy"] = html_policy(document)
                await send(held)
                await send({"type": "http.response.body", "body": document})
                return
            await send(message)

        await self.app(scope, receive, send_with_headers)
