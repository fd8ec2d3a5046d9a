"""The plain HTTP request every receiver reads, and the adapter that makes it from the worker's."""

from __future__ import annotations

from types import MappingProxyType

import azure.functions as func
from hypothesis import given
from hypothesis import strategies as st

from handlers.http_adapter import to_plain
from shared.platform.http import HttpRequest

_names = st.sampled_from(
    ["Content-Type", "content-type", "CONTENT-TYPE", "X-Hub-Signature-256", "x-a", "X-A"]
)
_headers = st.dictionaries(_names, st.text(max_size=5), max_size=6)


def _first(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


@given(_headers, st.booleans())
def test_a_header_is_found_in_any_case_and_the_first_spelling_wins(
    headers: dict[str, str], read_only: bool
) -> None:
    given_headers = MappingProxyType(headers) if read_only else headers
    request = HttpRequest("POST", "http://x/", given_headers, b"")
    for name in ("content-type", "Content-Type", "x-hub-signature-256", "X-A", "x-missing"):
        assert request.header(name) == _first(headers, name)


@given(
    _headers, st.dictionaries(st.sampled_from(["token", "code"]), st.text(max_size=3)), st.binary(max_size=9)
)
def test_the_adapter_carries_the_whole_worker_request(
    headers: dict[str, str], params: dict[str, str], body: bytes
) -> None:
    plain = to_plain(
        func.HttpRequest("post", "http://x/api/hooks/github", headers=headers, params=params, body=body)
    )
    assert (plain.method, plain.url, plain.body, dict(plain.query)) == (
        "POST",
        "http://x/api/hooks/github",
        body,
        params,
    )
    for name in ("content-type", "X-Hub-Signature-256", "x-a", "x-missing"):
        # The worker keeps one value per name whatever its case (the last one given).
        worker = func.HttpRequest("POST", "http://x/", headers=headers, body=b"").headers.get(name)
        assert plain.header(name) == worker
