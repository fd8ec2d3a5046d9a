"""Reuse of ACR access tokens across calls of one ``azure-containerregistry`` client.

The SDK (1.2.0, ``azure/containerregistry/_authentication_policy.py``) caches nothing: its
``ContainerRegistryChallengePolicy.on_request`` is an empty hook ("Future caching implementation
will be included here"), so every call goes out without a token, gets ACR's 401 challenge, and
the policy exchanges tokens and sends again. Its ``ACRExchangeClient.get_refresh_token`` re-runs
the Entra ID exchange while the refresh token still has more than 300 s left (the comparison is
inverted), so one call costs four round trips: the 401, ``/oauth2/exchange``, ``/oauth2/token``
and the call itself. At 100k manifests that is 300k needless requests per prune pass.

``AcrTokenReuse`` goes in the client's ``per_call_policies`` (ahead of the SDK's challenge
policy): it remembers the access token that last succeeded for a *route* (method, registry,
repository and kind of resource: the things ACR's scope depends on) and sends it with the next
call of that route until shortly before its ``exp``. A token the registry no longer accepts
costs one 401, which the SDK's own challenge handling answers as before: reuse can cost a round
trip, never a failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

# Path segments that are followed by one reference (a digest, tag or upload id): calls that differ
# only in that reference need the same scope (ACR REST API: /v2/<repo>/manifests/<ref>,
# /v2/<repo>/blobs/<digest>, /acr/v1/<repo>/_tags/<tag>, /acr/v1/<repo>/_manifests/<digest>).
_REFERENCE_PARENTS = frozenset({"manifests", "blobs", "_tags", "_manifests", "referrers"})
# Renew this long before ``exp``: a token must not expire between being chosen and being checked.
RENEW_MARGIN_S = 60.0
# A token without a readable ``exp`` is reused this long at most.
UNKNOWN_LIFETIME_S = 60.0


def route_key(method: str, url: str) -> tuple[str, str] | None:
    """What a call's scope depends on; None for the token endpoints (never given a token)."""
    parts = urlsplit(url)
    path = parts.path
    if path.startswith("/oauth2/"):
        return None
    segments = path.rstrip("/").split("/")
    if len(segments) >= 3 and segments[-2] in _REFERENCE_PARENTS:
        path = "/".join(segments[:-1]) + "/*"
    return method.upper(), f"{parts.scheme}://{parts.netloc}{path}"


def token_expiry(token: str, now: float) -> float:
    """The ``exp`` of a JWT-shaped token (ACR's are), else ``now`` + ``UNKNOWN_LIFETIME_S``."""
    pieces = token.split(".")
    if len(pieces) == 3:
        payload = pieces[1] + "=" * (-len(pieces[1]) % 4)
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload))
        except (ValueError, binascii.Error):
            claims = None
        expiry = claims.get("exp") if isinstance(claims, dict) else None
        if isinstance(expiry, int | float) and not isinstance(expiry, bool):
            return float(expiry)
    return now + UNKNOWN_LIFETIME_S


class AcrTokenReuse(HTTPPolicy):  # type: ignore[type-arg]
    """Sends the last accepted access token of a route again (thread-safe: deletes run in parallel)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._first: dict[tuple[str, str], threading.Lock] = {}

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        key = route_key(http.method, http.url)
        if key is None:
            return self.next.send(request)
        reused = self._fresh(key)
        if reused is None:
            # Parallel calls of a route without a token wait for the first one to get it, rather
            # than each paying the exchange (32 parallel DELETEs would make 32 exchanges).
            with self._lock:
                first = self._first.setdefault(key, threading.Lock())
            with first:
                reused = self._fresh(key)
                if reused is None:
                    return self._send(request, key, None)
        return self._send(request, key, reused)

    def _send(
        self, request: PipelineRequest[Any], key: tuple[str, str], reused: str | None
    ) -> PipelineResponse[Any, Any]:
        http = request.http_request
        if reused is not None and "Authorization" not in http.headers:
            http.headers["Authorization"] = f"Bearer {reused}"
        response = self.next.send(request)
        sent = str(http.headers.get("Authorization", ""))
        status = response.http_response.status_code
        with self._lock:
            if status == 401:
                self._tokens.pop(key, None)
            elif sent.startswith("Bearer ") and status < 500:
                token = sent.removeprefix("Bearer ")
                if token != reused:
                    self._tokens[key] = (token, token_expiry(token, self._clock()))
        return response

    def _fresh(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
        if found is None or found[1] - self._clock() <= RENEW_MARGIN_S:
            return None
        return found[0]
