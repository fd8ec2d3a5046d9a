"""The one outbound HTTP client (``shared.platform.http.client``) and its ``Retry-After`` parser."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest
import trustme

from shared.acr.run_backend import _retry_after
from shared.platform.http.client import ConnectionFailed, HttpClient, parse_retry_after, tls_context
from tests.support.ports import free_port
from tests.support.registry import Answer, RecordedRequest, loopback_tls, serve_loopback

# -- Retry-After: RFC 9110 §10.2.3 (Retry-After = HTTP-date / delay-seconds) -----------------------

# The instant the RFC's own example date names: "Retry-After: Fri, 31 Dec 1999 23:59:59 GMT".
_EXAMPLE_INSTANT = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def test_rfc_9110_delay_seconds_example() -> None:
    # §10.2.3: "Retry-After: 120" — "In the latter example, the delay is 2 minutes."
    assert parse_retry_after("120") == 120.0


def test_rfc_9110_http_date_example() -> None:
    # §10.2.3: "Retry-After: Fri, 31 Dec 1999 23:59:59 GMT", read 90 seconds before that instant.
    value = "Fri, 31 Dec 1999 23:59:59 GMT"
    assert parse_retry_after(value, now=lambda: _EXAMPLE_INSTANT - 90) == pytest.approx(90)
    assert parse_retry_after(value, now=lambda: _EXAMPLE_INSTANT + 90) == 0.0  # already past


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C's asctime() format (no zone: GMT)
    ],
)
def test_rfc_9110_every_http_date_format_a_recipient_must_accept(value: str) -> None:
    # §5.6.7 lists these three forms of the same instant; a recipient must accept all of them.
    instant = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=lambda: instant - 30) == pytest.approx(30)


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "1e3", "12 seconds", "Fri, 99 Foo 1999"])
def test_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_arm_millisecond_headers_win_over_retry_after() -> None:
    assert _retry_after({"retry-after-ms": "1500", "Retry-After": "120"}) == 1.5
    assert _retry_after({"x-ms-retry-after-ms": "250"}) == 0.25
    assert _retry_after({"Retry-After": "120"}) == 120.0
    assert _retry_after({"Retry-After": "Fri, 31 Dec 1999 23:59:59 GMT"}, now=_EXAMPLE_INSTANT - 60) == 60.0
    assert _retry_after(None) is None


# -- the client ------------------------------------------------------------------------------------


def test_statuses_are_returned_and_redirects_are_not_followed() -> None:
    seen: list[RecordedRequest] = []

    def handler(request: RecordedRequest) -> Answer:
        seen.append(request)
        if request.path == "/moved":
            return Answer(302, {"Location": "/elsewhere"})
        return Answer(503, {"Retry-After": "7", "Content-Type": "text/plain"}, b"busy")

    client = HttpClient(timeout=5, user_agent="slipway-test")
    with serve_loopback(handler) as port:
        moved = client.request("GET", f"http://127.0.0.1:{port}/moved", headers={"Authorization": "x"})
        busy = client.request("POST", f"http://127.0.0.1:{port}/api?sig=secret", body=b"{}")
    assert (moved.status, moved.header("location")) == (302, "/elsewhere")
    assert (busy.status, busy.body, busy.header("Retry-After"), busy.truncated) == (503, b"busy", "7", False)
    assert [r.path for r in seen] == ["/moved", "/api"]  # /elsewhere never asked for
    assert seen[0].headers["user-agent"] == "slipway-test"
    assert (seen[1].method, seen[1].body) == ("POST", b"{}")


def test_a_body_is_kept_up_to_max_body_and_read_by_lines_when_streamed() -> None:
    def handler(request: RecordedRequest) -> Answer:
        return Answer(200, {}, b"one\ntwo\r\nthree")

    client = HttpClient(timeout=5)
    with serve_loopback(handler) as port:
        cut = client.request("GET", f"http://127.0.0.1:{port}/", max_body=5)
        with client.open("GET", f"http://127.0.0.1:{port}/") as streamed:
            lines = list(streamed.lines())
    assert (cut.body, cut.truncated) == (b"one\nt", True)
    assert lines == [b"one\n", b"two\r\n", b"three"]


def test_connection_failures_become_connection_failed_without_the_query() -> None:
    client = HttpClient(timeout=5)
    with pytest.raises(ConnectionFailed) as refused:
        client.request("GET", f"http://127.0.0.1:{free_port()}/log?sig=secret")
    assert "connection failed" in str(refused.value) and "secret" not in str(refused.value)
    assert isinstance(refused.value, OSError) and not refused.value.timed_out

    def slow(request: RecordedRequest) -> Answer:
        return Answer(200, {}, b"late", delay=1.0)

    with serve_loopback(slow) as port, pytest.raises(ConnectionFailed) as late:
        HttpClient(timeout=0.2).request("GET", f"http://127.0.0.1:{port}/")
    assert late.value.timed_out


def test_tls_is_verified_and_a_ca_bundle_can_be_named(oci_test_ca: tuple[trustme.CA, str]) -> None:
    ca, ca_path = oci_test_ca
    with serve_loopback(lambda request: Answer(204), tls=loopback_tls(ca)) as port:
        url = f"https://127.0.0.1:{port}/"
        with pytest.raises(ConnectionFailed) as untrusted:
            HttpClient(timeout=5).request("GET", url)
        assert untrusted.value.tls_verification_failed
        assert HttpClient(timeout=5, tls=tls_context(ca_path)).request("GET", url).status == 204


def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(ValueError, match="only http and https"):
        HttpClient().request("GET", "file:///etc/passwd")
    with pytest.raises(ValueError, match="timeout"):
        HttpClient(timeout=0)
    assert isinstance(tls_context(False), ssl.SSLContext)
