"""The one way the tests' fake servers listen: a threaded HTTP(S) server on a loopback port.

Every fake (``acr_server``, ``git_hosts``, the registry fakes in ``token_realm``, ``fake_acr``
and ``acr_dataplane``) binds an ephemeral 127.0.0.1 port with ``bind_loopback``, optionally
behind TLS from a ``trustme`` test CA (``make_test_ca`` / ``loopback_tls``), serves from a daemon
thread inside ``serving`` and is shut down when it exits. The TLS handshake happens in the
handler thread (``LoopbackHandler.setup``), so a stuck client cannot block ``accept()``.

``serve_loopback`` is the simplest flavour: a function from ``RecordedRequest`` to ``Answer``.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

LOOPBACK = "127.0.0.1"
_ServerT = TypeVar("_ServerT", bound=ThreadingHTTPServer)


def make_test_ca(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[trustme.CA, str]:
    """A test CA (key generation is the slow part: make one per session) and its PEM path for clients."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp(name) / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


def loopback_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 and localhost from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(LOOPBACK, "localhost").configure_cert(context)
    return context


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, quiet, TLS handshake in the handler thread; subclasses set ``timeout`` and serve."""

    protocol_version = "HTTP/1.1"
    # http.server writes the status and headers, then the body: two segments, and on a keep-alive
    # connection the second waits for the client's delayed ACK (Nagle), ~40 ms per request.
    # TCP_NODELAY is socketserver's own switch (CPython Lib/socketserver.py, StreamRequestHandler).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()  # applies ``timeout`` and ``disable_nagle_algorithm`` to the socket
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        return


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True


def bind_loopback(
    server_class: type[_ServerT], handler: type[BaseHTTPRequestHandler], *, tls: ssl.SSLContext | None = None
) -> _ServerT:
    """``server_class`` bound to a free loopback port (not serving yet), behind ``tls`` if given."""
    httpd = server_class((LOOPBACK, 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    return httpd


def port_of(httpd: ThreadingHTTPServer) -> int:
    return int(httpd.server_address[1])


@contextlib.contextmanager
def serving(httpd: _ServerT, *, name: str, poll_interval: float = 0.05) -> Iterator[_ServerT]:
    """Serve ``httpd`` from a daemon thread; shut it down and close its socket on exit."""
    thread = threading.Thread(target=httpd.serve_forever, args=(poll_interval,), name=name, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- a server that answers with a function -------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names
    body: bytes = b""

    @property
    def params(self) -> dict[str, list[str]]:
        """Query parameters (repeatable, like ``scope``)."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def form(self) -> dict[str, list[str]]:
        """The form-encoded body's fields."""
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (timeouts)


Handler = Callable[[RecordedRequest], Answer]


class _FunctionHandler(LoopbackHandler):
    timeout = 15
    server: _FunctionServer

    def _serve(self) -> None:
        body = self.read_body()
        parts = urlsplit(self.path)
        request = RecordedRequest(
            self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()}, body
        )
        answer = self.server.handler(request)
        if answer.delay:
            time.sleep(answer.delay)
        self.send_response(answer.status)
        headers = {k.lower(): v for k, v in answer.headers.items()}
        for name, value in answer.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", headers.get("content-length", str(len(answer.body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = _serve
    do_HEAD = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve


class _FunctionServer(LoopbackServer):
    handler: Handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that timed out and hung up is expected in these tests


@contextlib.contextmanager
def serve_loopback(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Run ``handler`` behind a threaded HTTP(S) server on a free loopback port; yields the port."""
    httpd = bind_loopback(_FunctionServer, _FunctionHandler, tls=tls)
    httpd.handler = handler
    with serving(httpd, name="loopback-http"):
        yield port_of(httpd)
