"""Authentication checks the Git host receivers share: HMAC signatures, tokens, HTTP Basic.

Every comparison is constant-time (``hmac.compare_digest``) and runs on the raw bytes received,
before the body is parsed, so an unauthenticated sender learns nothing from timing or parsing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def hmac_sha256_hex(secret: bytes, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``body``: the signature Gitea, Forgejo and Bitbucket send."""
    # hmac.digest: the one-shot C path, twice as fast as building an HMAC object.
    return hmac.digest(secret, body, hashlib.sha256).hex()


def verify_hmac_sha256(secret: bytes, body: bytes, header: str | None, *, prefix: str = "") -> bool:
    """Whether ``header`` is ``prefix`` + the hex HMAC-SHA256 of ``body``, compared in constant time.

    The hex digest is compared case-insensitively (senders differ in case); the prefix must match.
    """
    if not header:
        return False
    value = header.strip()
    if not value.startswith(prefix):
        return False
    expected = hmac_sha256_hex(secret, body)
    return hmac.compare_digest(expected.encode(), _bytes(value[len(prefix) :].lower()))


def tokens_equal(expected: str, presented: str | None) -> bool:
    """Constant-time equality of a shared token (e.g. ``X-Gitlab-Token``); None never matches."""
    if presented is None or not expected:
        return False
    return hmac.compare_digest(_bytes(expected), _bytes(presented))


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, or None when it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` value a sender configured with ``user`` and ``password`` sends: the
    inverse of ``parse_basic_auth`` (RFC 7617 §2: ``Basic`` base64(user ":" password), UTF-8)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def basic_auth_matches(header: str | None, user: str, password: str) -> bool:
    """Both parts compared in constant time, and both always compared (no early exit on the user)."""
    credentials = parse_basic_auth(header)
    if credentials is None or not user or not password:
        return False
    user_ok = hmac.compare_digest(_bytes(user), _bytes(credentials[0]))
    password_ok = hmac.compare_digest(_bytes(password), _bytes(credentials[1]))
    return user_ok & password_ok


def _bytes(value: str) -> bytes:
    """Bytes for ``compare_digest`` (which refuses non-ASCII str); never fails on odd input."""
    return value.encode("utf-8", "surrogatepass")
