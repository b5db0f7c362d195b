"""Credentials written into a URL (``http://user:password@mlflow-host/``) kept out of answers and log lines.

MLflow's errors quote the tracking URI whole, so with the registry down its password had been shown by ``/healthz``,
which needs no login, and in the 503 of every route that reads the registry.
"""

from __future__ import annotations

import re

__all__ = ["hide_url_credentials"]

# scheme://userinfo@ : the userinfo (RFC 3986 3.2.1) is whatever comes before the first '@' of the authority.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"]+)@")


def hide_url_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***`` (the host and path stay)."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
