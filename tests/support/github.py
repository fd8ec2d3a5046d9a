"""Helpers to build signed GitHub deliveries from the real fixture payloads."""

from __future__ import annotations

from typing import Any

from shared.intake.receivers.github import sign
from shared.platform.http import HttpRequest
from tests.support import receiving

FIXTURES = receiving.FIXTURES / "github"
SECRET = "It's a Secret to Everybody"


def fixture_bytes(name: str) -> bytes:
    return receiving.fixture_bytes("github", name)


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = receiving.fixture_json("github", name)
    return data


def signed_request(
    body: bytes,
    *,
    event: str = "push",
    delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    secret: str = SECRET,
    content_type: str = "application/json",
    extra_headers: dict[str, str] | None = None,
) -> HttpRequest:
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": sign(secret.encode(), body),
        "User-Agent": "GitHub-Hookshot/test",
    }
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    headers.update(extra_headers or {})
    return HttpRequest(method="POST", url="http://localhost/api/hooks/github", headers=headers, body=body)
