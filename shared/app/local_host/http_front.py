"""The local host's HTTP front: ``/api/`` routes to the app's HTTP functions, as the Functions host does.

Requests are framed strictly (RFC 9112), refusals answer in the app's JSON error shape, routes
above ``anonymous`` need the master key, and every response leaves in one write with
TCP_NODELAY (see ``handler_class``), which keeps keep-alive clients from waiting on Nagle.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from shared.app.local_host.functions import MASTER_KEY_SETTING, AppFunctions, HttpRoute
from shared.platform.http import RequestRejected
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.host")
_ERROR_NAMES = {
    400: "bad_request",
    414: "uri_too_long",
    431: "headers_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}
_INTERNAL_ERROR = b'{"error":"internal_error","reason":"an unexpected error; the server log has the details"}'


class HttpFront:
    """Routes, limits and keys of the HTTP side; ``handler_class`` is what the server instantiates."""

    def __init__(
        self,
        functions: AppFunctions,
        *,
        max_body_bytes: int,
        read_timeout: float,
        master_key: str | None,
        require_keys: bool,
    ) -> None:
        self._functions = functions
        self._max_body_bytes = max_body_bytes
        self._read_timeout = read_timeout
        self._master_key = master_key
        self._require_keys = require_keys

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "slipway-local"
            protocol_version = "HTTP/1.1"
            timeout = host._read_timeout  # a client that stops sending frees its thread
            # One write per response: http.server writes the status line and headers at
            # end_headers() and the body apart; unbuffered (socketserver's default), that is two
            # segments, and on a keep-alive connection the second waits for the client's delayed
            # ACK (Nagle). A buffered wfile sends both at the flush that handle_one_request does
            # after each request; TCP_NODELAY (socketserver's own switch, which it advises "only
            # when wbufsize != 0") keeps any response larger than the buffer from stalling too.
            # CPython Lib/socketserver.py, StreamRequestHandler.setup / wbufsize.
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one structured line per request instead

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """http.server's own refusals (request line, headers) as JSON, like every answer."""
                payload = RequestRejected(
                    code, _ERROR_NAMES.get(code, "bad_request"), message or self.responses.get(code, ("",))[0]
                ).response()
                body = payload.body_bytes()
                # A request line it cannot parse leaves http.server at HTTP/0.9, whose answers
                # have no status line; nobody sends 0.9 any more, so answer with one.
                self.request_version = "HTTP/1.1"
                self.send_response(code, message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                    self.wfile.write(body)
                self.wfile.flush()  # the refusal may come before handle_one_request's own flush

            def handle_expect_100(self) -> bool:
                """The interim 100 Continue must leave now: the client waits for it to send the body."""
                answer = super().handle_expect_100()
                self.wfile.flush()
                return answer

            def _handle(self) -> None:
                host.serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        return Handler

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        import azure.functions as func

        started = time.perf_counter()
        parts = urlsplit(handler.path)
        status, payload, headers = (
            404,
            b'{"error":"not_found","reason":"no function serves this path"}',
            {"Content-Type": "application/json"},
        )
        name = None
        body, refused = self._read_body(handler)
        if refused is not None:
            # The rest of the stream cannot be framed: answer, then close the connection.
            status, payload = refused.status, refused.response().body_bytes()
            handler.close_connection = True
        for route in self._functions.http if refused is None else ():
            match = route.pattern.match(parts.path)
            if not match:
                continue
            name = route.name
            if handler.command.upper() not in route.methods:
                status, payload = 405, b'{"error":"method_not_allowed","reason":"method not allowed"}'
                break
            denied = self._authorize(route, handler.headers.get("x-functions-key"), parts.query)
            if denied is not None:
                status, payload = denied.status, denied.response().body_bytes()
                break
            req = func.HttpRequest(
                method=handler.command,
                url=f"http://{handler.headers.get('Host', 'localhost')}{handler.path}",
                headers=dict(handler.headers.items()),
                params=dict(parse_qsl(parts.query)),
                route_params=match.groupdict(),
                body=body,
            )
            try:
                response = route.function(**{route.arg_name: req})
                status = response.status_code
                payload = response.get_body()
                headers = {k: v for k, v in response.headers.items()}
                headers.setdefault("Content-Type", response.mimetype or "application/json")
            except Exception:  # the Functions host answers 500 too; the details go to the log only
                logger.exception("function %s failed", route.name)
                status, payload = 500, _INTERNAL_ERROR
            break
        handler.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection"):
                handler.send_header(key, value)
        if refused is not None:
            handler.send_header("Connection", "close")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)
        handler.wfile.flush()  # headers and body leave in one write (see the handler's wbufsize)
        correlation_id = None
        with contextlib.suppress(ValueError, AttributeError):
            correlation_id = json.loads(payload).get("correlation_id")
        log_event(
            logger,
            "http_request",
            method=handler.command,
            path=parts.path,
            function=name,
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 1),
            correlation_id=correlation_id,
        )

    def _authorize(self, route: HttpRoute, header_key: str | None, query: str) -> RequestRejected | None:
        """A route above ``anonymous`` needs the master key, as the Functions host asks for it.

        The key comes in the ``x-functions-key`` header or the ``code`` query parameter
        (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to, "Use access
        keys"); the master key satisfies every level. Without a master key and unless keys are
        required, such routes stay open, as under Core Tools on a developer's machine.
        """
        if route.auth_level == "anonymous" or not self._require_keys:
            return None
        presented = header_key if header_key is not None else dict(parse_qsl(query)).get("code")
        if self._master_key is None:
            reason = f"this route needs the master key, and {MASTER_KEY_SETTING} is not set"
            return RequestRejected(401, "unauthorized", reason)
        if presented is None or not hmac.compare_digest(presented.encode(), self._master_key.encode()):
            reason = f"this route needs the master key ({MASTER_KEY_SETTING}) in x-functions-key"
            return RequestRejected(401, "unauthorized", reason)
        return None

    def _read_body(self, handler: BaseHTTPRequestHandler) -> tuple[bytes, RequestRejected | None]:
        """The body as ``Content-Length`` frames it, or why the request cannot be read.

        Framing follows RFC 9112 section 6 (https://www.rfc-editor.org/rfc/rfc9112#section-6):
        a request with neither Content-Length nor Transfer-Encoding has no body; a
        Transfer-Encoding this server does not decode gets 411 Length Required; a Content-Length
        that is not one decimal number (or several that differ) is unrecoverable framing: 400.
        A declared length over the limit is refused (413) before a byte of it is read.
        """
        if handler.headers.get("Transfer-Encoding") is not None:
            return b"", RequestRejected(411, "length_required", "send the body with a Content-Length")
        values = handler.headers.get_all("Content-Length") or []
        distinct = {value.strip() for value in ",".join(values).split(",")} if values else set()
        if not distinct:
            return b"", None
        if len(distinct) != 1 or not next(iter(distinct)).isdigit() or not next(iter(distinct)).isascii():
            return b"", RequestRejected(400, "bad_request", "Content-Length is not one non-negative number")
        length = int(next(iter(distinct)))
        if length > self._max_body_bytes:
            return b"", RequestRejected(
                413, "payload_too_large", f"body is larger than {self._max_body_bytes} bytes"
            )
        try:
            body = handler.rfile.read(length) if length else b""
        except OSError:  # a timeout included: the client stopped sending
            body = b""
        if len(body) != length:
            return b"", RequestRejected(400, "bad_request", "the body is shorter than its Content-Length")
        return body, None
