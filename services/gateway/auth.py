"""Handshake authentication: a bearer token in the Authorization header or `?token=`."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr


def token_of(path: str, headers: object) -> str | None:
    auth = headers.get("Authorization") if hasattr(headers, "get") else None
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def allowed(expected: SecretStr | None, given: str | None) -> bool:
    """True when no token is configured, or the given one matches (constant time)."""
    if expected is None or not expected.get_secret_value():
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.get_secret_value().encode(), given.encode())
