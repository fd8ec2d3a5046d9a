from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.build_request import BuildRequest, request_id


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
