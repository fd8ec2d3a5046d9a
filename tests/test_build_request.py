import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.model.build_request import BuildRequest, request_id


def _request(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "schema": "slipway.build-request/v1",
        "id": request_id("app", "refs/heads/main", "a" * 40),
        "target": "app",
        "trigger": {
            "kind": "push",
            "provider": "github",
            "delivery_id": "d-1",
            "received_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "correlation_id": "c-1",
        },
        "source": {"repo_url": "https://github.com/o/r.git", "ref": "refs/heads/main", "commit": "a" * 40},
        "image": {"registry": "r.azurecr.io", "repository": "team/app", "tags": ["main"]},
        "platforms": ["linux/amd64"],
        "cache": {"name": "app-main"},
        "coalesce_key": "app:refs/heads/main",
    }
    body.update(overrides)
    return body


def test_round_trip_keeps_every_field() -> None:
    req = BuildRequest.model_validate(_request())
    again = BuildRequest.from_json(req.to_json())
    assert again == req
    assert '"schema":"slipway.build-request/v1"' in req.to_json()


def test_request_id_is_deterministic_and_distinguishes_refs() -> None:
    a = request_id("app", "refs/heads/main", "a" * 40)
    assert a == request_id("app", "refs/heads/main", "a" * 40)
    assert a != request_id("app", "refs/heads/release", "a" * 40)
    assert a.startswith("app.")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target", "App!"),
        ("platforms", ["linux/amd64;rm -rf /"]),
        ("image", {"registry": "r.azurecr.io", "repository": "team/app", "tags": ["$(reboot)"]}),
        ("source", {"repo_url": "x", "ref": "refs/heads/main", "commit": "abc"}),
        ("unknown", 1),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        BuildRequest.model_validate(_request(**{field: value}))


def test_json_bytes_are_the_json_text_encoded() -> None:
    request = BuildRequest.model_validate(_request(build_args={"NOTE": "caf\u00e9"}))
    assert request.to_json_bytes() == request.to_json().encode()
    assert BuildRequest.from_json(request.to_json_bytes()) == request


def test_request_ids_never_change_between_versions() -> None:
    """Ids are Service Bus duplicate-detection keys: a new version must give a queued request's
    redelivery the id it had."""
    assert request_id("app", "refs/heads/main", "a" * 40, "linux/amd64,linux/arm64") == (
        "app.219b7602aa0e18514a6e81f5abd0763d"
    )
    assert request_id("app", "refs/heads/caf\u00e9", "a" * 40) == "app.b6b17562ea24e51dfd0f7aef2064b2ce"


@given(st.lists(st.text(), max_size=6))
def test_request_id_hashes_the_compact_json_of_its_parts(parts: list[str]) -> None:
    expected = hashlib.sha256(json.dumps(["t", *parts], separators=(",", ":")).encode()).hexdigest()
    assert request_id("t", *parts) == f"t.{expected[:32]}"
