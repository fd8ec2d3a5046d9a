"""Helpers to build signed GitHub deliveries from the real fixture payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.intake.receivers.github import sign
from shared.platform.http import HttpRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bytes(name))
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
