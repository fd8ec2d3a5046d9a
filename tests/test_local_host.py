"""The local host's pieces: discovery, HTTP routing, timers, settings."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.app.local_host import HostError, LocalHost, apply_settings, discover, load_local_settings, resolve


def _get(url: str, method: str = "GET") -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def functions() -> Any:
    return discover("tests.support.sample_app", {"TICK_SCHEDULE": "*/1 * * * * *"})


def test_discovery_sorts_functions_by_trigger(functions: Any) -> None:
    assert [r.name for r in functions.http] == ["echo", "boom"]
    assert [t.name for t in functions.timers] == ["tick"]
    assert functions.queues == []


def test_http_routes_params_errors_and_timers(functions: Any) -> None:
    from tests.support import sample_app

    host = LocalHost(functions, queue_factory=lambda name: None, port=0)
    host.start()
    try:
        base = "http://{}:{}".format(*host.address)
        assert _get(f"{base}/api/items/42?q=x") == (200, {"item": "42", "q": "x", "correlation_id": "echo-1"})
        status, body = _get(f"{base}/api/items/42", method="POST")
        assert (status, body["error"]) == (405, "method_not_allowed")
        status, body = _get(f"{base}/api/nowhere")
        assert (status, body["error"]) == (404, "not_found")
        status, body = _get(f"{base}/api/boom", method="POST")
        assert (status, body["error"]) == (500, "internal_error")
        deadline = time.monotonic() + 5
        while len(sample_app.ticks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sample_app.ticks) >= 2  # run on startup, then every second
    finally:
        host.stop()


def test_unresolved_setting_is_a_clear_error() -> None:
    with pytest.raises(HostError, match="TICK_SCHEDULE"):
        resolve("%TICK_SCHEDULE%", {})


def test_disabled_function_is_skipped() -> None:
    found = discover(
        "tests.support.sample_app",
        {"TICK_SCHEDULE": "0 0 * * * *", "AzureWebJobs.tick.Disabled": "true"},
    )
    assert found.timers == []


def test_local_settings_values_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file"}}))
    env = {"A": "from-env"}
    apply_settings(load_local_settings(path), env)
    assert env == {"A": "from-env", "B": "from-file"}
    assert load_local_settings(tmp_path / "missing.json") == {}
    path.write_text(json.dumps({"Values": ["not", "a", "mapping"]}))
    with pytest.raises(HostError):
        load_local_settings(path)


# --- request framing: every malformed request gets a JSON 4xx, never a dropped connection ------


def _raw(
    address: tuple[str, int], request: bytes, *, half_close: bool = False
) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes; read one whole response (status, lower-cased headers, JSON body)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        stream = sock.makefile("rb")
        status_line = stream.readline()
        assert status_line, "the server closed the connection without answering"
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        body = stream.read(int(headers["content-length"]))
        return status, headers, json.loads(body)


@pytest.fixture
def framing_host(functions: Any) -> Iterator[LocalHost]:
    host = LocalHost(functions, queue_factory=lambda name: None, port=0, max_body_bytes=1000, read_timeout=2)
    host.start()
    yield host
    host.stop()


def _post(length_headers: str, body: bytes = b"") -> bytes:
    return f"POST /api/boom HTTP/1.1\r\nHost: x\r\n{length_headers}\r\n".encode() + body


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ("Content-Length: abc\r\n", b"", 400, "bad_request"),
        ("Content-Length: -1\r\n", b"", 400, "bad_request"),
        ("Content-Length: 1e3\r\n", b"", 400, "bad_request"),
        ("Content-Length: 2\r\nContent-Length: 3\r\n", b"abc", 400, "bad_request"),
        ("Content-Length: \u0661\r\n", b"x", 400, "bad_request"),  # a non-ASCII digit
        ("Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n", 411, "length_required"),
        ("Content-Length: 1000000000000\r\n", b"", 413, "payload_too_large"),
    ],
)
def test_malformed_framing_is_a_json_4xx_and_closes(
    framing_host: LocalHost, headers: str, body: bytes, status: int, error: str
) -> None:
    got, response_headers, answer = _raw(framing_host.address, _post(headers, body))
    assert (got, answer["error"]) == (status, error)
    assert response_headers["connection"] == "close"


def test_a_body_shorter_than_its_length_is_a_400(framing_host: LocalHost) -> None:
    status, _, answer = _raw(
        framing_host.address, _post("Content-Length: 50\r\n", b"only ten b"), half_close=True
    )
    assert (status, answer["error"]) == (400, "bad_request")


def test_same_values_repeated_and_no_length_are_well_framed(framing_host: LocalHost) -> None:
    # RFC 9112 section 6.3: identical repeated values are one length; no length means no body.
    # Both reach the function, which fails: a 500 that does not carry the exception's text.
    for headers, body in (("Content-Length: 3, 3\r\n", b"abc"), ("", b"")):
        status, _, answer = _raw(framing_host.address, _post(headers, body))
        assert (status, answer["error"]) == (500, "internal_error")
        assert "the function failed" not in json.dumps(answer)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12))
def test_fuzz_content_length_never_drops_the_connection(framing_host: LocalHost, value: str) -> None:
    status, _, answer = _raw(framing_host.address, _post(f"Content-Length: {value}\r\n"), half_close=True)
    assert status in (400, 413, 500), answer
    assert status != 500 or (value.strip().isdigit() and int(value) == 0)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /api/" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),  # http.server reads 65536
        (b"GET /api/boom HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /api/boom HTTP/2.0\r\n\r\n", 505),
        (b"POST /api/boom HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),  # over 100 headers
    ],
)
def test_requests_http_server_refuses_are_json_too(
    framing_host: LocalHost, request_bytes: bytes, status: int
) -> None:
    got, headers, answer = _raw(framing_host.address, request_bytes)
    assert got == status and headers["connection"] == "close"
    assert answer["reason"]


# --- keep-alive: one write per response, no Nagle stall ---------------------------------------


def test_each_keep_alive_response_leaves_in_one_write_with_nodelay(
    framing_host: LocalHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers and body written apart stall each keep-alive request on the client's delayed ACK.

    Counted at the socket: every send the server makes on this connection, and the TCP_NODELAY
    option as the server's own socket reports it (checked structurally, not by timing).
    """
    port = framing_host.address[1]
    sends: list[int] = []
    nodelay: list[int] = []
    lock = threading.Lock()

    def counting(method: Any) -> Any:
        def wrapper(sock: socket.socket, data: Any, *rest: Any) -> Any:
            if sock.getsockname()[1] == port:  # the server's side of the connection only
                with lock:
                    sends.append(len(data))
                    nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            return method(sock, data, *rest)

        return wrapper

    monkeypatch.setattr(socket.socket, "send", counting(socket.socket.send))
    monkeypatch.setattr(socket.socket, "sendall", counting(socket.socket.sendall))
    connection = http.client.HTTPConnection(*framing_host.address, timeout=10)
    try:
        for number in range(5):
            connection.request("GET", f"/api/items/{number}")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["item"] == str(number)
            assert not response.will_close
    finally:
        connection.close()
    assert len(sends) == 5, sends  # one write per response, on the one connection
    assert all(nodelay), nodelay


def test_expect_100_continue_is_answered_before_the_body(framing_host: LocalHost) -> None:
    # RFC 9110 section 10.1.1: a client that sends Expect: 100-continue may wait for the interim
    # answer before sending the body; a buffered writer must not hold that answer back.
    with socket.create_connection(framing_host.address, timeout=5) as sock:
        head = b"POST /api/boom HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        sock.sendall(head)
        stream = sock.makefile("rb")
        assert stream.readline().split()[1] == b"100"  # raises on timeout if it never came
        assert stream.readline() == b"\r\n"
        sock.sendall(b"abc")
        assert stream.readline().split()[1] == b"500"  # the sample function fails on purpose
