"""The local host: runs the very function objects ``function_app.py`` registers, on one machine.

HTTP triggers are served under ``/api/`` by a threaded HTTP server, the Service Bus trigger is
fed from the local queue (SQLite, Service Bus semantics), timer triggers fire on their
schedules. Settings come from the environment and ``local.settings.json`` (``Values``), as the
Functions host does; the environment wins.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from shared.model.cron import Cron
from shared.platform.http import DEFAULT_MAX_BODY_BYTES, RequestRejected
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.host")
# The local host's stand-in for the Functions host's master key (``_master``).
MASTER_KEY_SETTING = "SLIPWAY_LOCAL_MASTER_KEY"
_ERROR_NAMES = {
    400: "bad_request",
    414: "uri_too_long",
    431: "headers_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}
_INTERNAL_ERROR = b'{"error":"internal_error","reason":"an unexpected error; the server log has the details"}'
_SETTING_RE = re.compile(r"%([A-Za-z0-9_]+)%")
# The timers' %NAME% schedule settings (NCRONTAB with seconds, UTC) and what ``slipway serve``
# uses when one is unset; in Azure each must be set (``slipway doctor`` checks).
DEFAULT_SCHEDULES = {
    "SLIPWAY_RECONCILE_SCHEDULE": "30 * * * * *",
    "SLIPWAY_SCHEDULE_TIMER": "0 * * * * *",
    "SLIPWAY_BASE_IMAGE_POLL_SCHEDULE": "0 */15 * * * *",
    "SLIPWAY_CACHE_PRUNE_SCHEDULE": "0 30 3 * * *",
    "SLIPWAY_IMAGE_PRUNE_SCHEDULE": "0 0 4 * * *",
}


class HostError(Exception):
    """The app uses something the local host cannot run."""


def load_local_settings(path: Path) -> dict[str, str]:
    """``Values`` of a local.settings.json file (missing file: nothing)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    values = data.get("Values", {})
    if not isinstance(values, dict):
        raise HostError(f"{path}: Values must be an object")
    return {str(k): str(v) for k, v in values.items()}


def apply_settings(values: Mapping[str, str], environ: dict[str, str] | None = None) -> None:
    """Expose settings as environment variables; variables already set win."""
    env = os.environ if environ is None else environ
    for key, value in values.items():
        env.setdefault(key, value)


def resolve(text: str, settings: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise HostError(f"binding refers to %{name}% but the setting is not set")
        return settings[name]

    return _SETTING_RE.sub(sub, text)


@dataclass
class HttpRoute:
    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    arg_name: str
    function: Callable[..., Any]
    path: str = ""  # as declared, under /api/, for people to read
    auth_level: str = "anonymous"  # the binding's authLevel, lower case: anonymous, function, admin


@dataclass
class QueueTrigger:
    name: str
    queue_name: str
    arg_name: str
    function: Callable[..., Any]


@dataclass
class TimerTrigger:
    name: str
    cron: Cron
    arg_name: str
    function: Callable[..., Any]
    run_on_startup: bool = False
    next_due: datetime | None = None
    schedule: str = ""  # as resolved from its setting, for people to read


@dataclass
class AppFunctions:
    http: list[HttpRoute] = field(default_factory=list)
    queues: list[QueueTrigger] = field(default_factory=list)
    timers: list[TimerTrigger] = field(default_factory=list)


def _route_pattern(route: str) -> re.Pattern[str]:
    parts = []
    for segment in route.strip("/").split("/"):
        match = re.fullmatch(r"\{(\w+)(?::[^}]*)?\??\}", segment)
        parts.append(f"(?P<{match.group(1)}>[^/]+)" if match else re.escape(segment))
    return re.compile("^/api/" + "/".join(parts) + "/?$")


def discover(app_module: str, settings: Mapping[str, str]) -> AppFunctions:
    """Import the app like the worker does and sort its functions by trigger."""
    import azure.functions as func

    module = importlib.import_module(app_module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise HostError(f"{app_module} must define exactly one FunctionApp (found {len(apps)})")
    found = AppFunctions()
    app = apps[0]
    # get_functions() records names and refuses a second call on the same app object; the host
    # may discover the same app twice in one process (tests, a restart in place).
    app.functions_bindings = None
    for fn in app.get_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        others = [b for b in bindings if not b["type"].endswith("Trigger") and b["type"] != "http"]
        name = fn.get_function_name() or "function"
        if settings.get(f"AzureWebJobs.{name}.Disabled", "").lower() in ("true", "1"):
            continue  # the Functions host's own switch for disabling one function
        if len(triggers) != 1 or others:
            raise HostError(f"{name}: the local host supports one trigger and no other bindings")
        trigger = triggers[0]
        user_function = fn.get_user_function()
        if trigger["type"] == "httpTrigger":
            route = trigger.get("route") or name
            methods = frozenset(
                m.upper() for m in trigger.get("methods") or ["GET", "POST", "PUT", "DELETE", "PATCH"]
            )
            found.http.append(
                HttpRoute(
                    name,
                    _route_pattern(route),
                    methods,
                    trigger["name"],
                    user_function,
                    f"/api/{route.strip('/')}",
                    str(trigger.get("authLevel") or "function").lower(),
                )
            )
        elif trigger["type"] == "serviceBusTrigger":
            queue = resolve(trigger["queueName"], settings)
            found.queues.append(QueueTrigger(name, queue, trigger["name"], user_function))
        elif trigger["type"] == "timerTrigger":
            schedule = resolve(trigger["schedule"], settings)
            found.timers.append(
                TimerTrigger(
                    name,
                    Cron.parse(schedule),
                    trigger["name"],
                    user_function,
                    bool(trigger.get("runOnStartup")),
                    schedule=schedule,
                )
            )
        else:
            raise HostError(f"{name}: trigger {trigger['type']} is not supported by the local host")
    return found


class LocalHost:
    """Serves HTTP triggers, feeds queue triggers, fires timers, until ``stop``."""

    def __init__(
        self,
        functions: AppFunctions,
        *,
        queue_factory: Callable[[str], Any],
        host: str = "127.0.0.1",
        port: int = 7071,
        poll_interval: float = 0.1,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        read_timeout: float = 30.0,
        master_key: str | None = None,
        require_keys: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.functions = functions
        self._queue_factory = queue_factory
        self._poll = poll_interval
        self._max_body_bytes = max_body_bytes
        self._read_timeout = read_timeout
        self._master_key = master_key or None
        self._require_keys = require_keys or self._master_key is not None
        self._clock = clock
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._spawn("http", self._server.serve_forever)
        for trigger in self.functions.queues:
            self._spawn(f"queue:{trigger.name}", lambda t=trigger: self._queue_loop(t))  # type: ignore[misc]
        if self.functions.timers:
            self._spawn("timers", self._timer_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"slipway-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; let in-flight work finish. Queued messages stay in the queue file."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout)

    # --- HTTP ---------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
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
                host._serve_http(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        return Handler

    def _serve_http(self, handler: BaseHTTPRequestHandler) -> None:
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
        for route in self.functions.http if refused is None else ():
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

    # --- queue --------------------------------------------------------------------------------

    def _queue_loop(self, trigger: QueueTrigger) -> None:
        queue = self._queue_factory(trigger.queue_name)
        while not self._stopping.is_set():
            messages = queue.receive(max_count=1)
            if not messages:
                self._stopping.wait(self._poll)
                continue
            for message in messages:
                self._deliver(queue, trigger, message)

    def _deliver(self, queue: Any, trigger: QueueTrigger, message: Any) -> None:
        from azure.functions.servicebus import ServiceBusMessage

        sb = ServiceBusMessage(
            body=message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            subject=message.subject,
            delivery_count=message.delivery_count,
            enqueued_time_utc=message.enqueued_time,
            locked_until=message.locked_until,
            lock_token=message.lock_token,
            sequence_number=message.sequence_number,
            application_properties=dict(message.application_properties),
            user_properties=dict(message.application_properties),
        )
        try:
            trigger.function(**{trigger.arg_name: sb})
        except Exception as exc:
            # As the Functions host does with autoCompleteMessages (the default): an exception
            # abandons the message, whatever it is. A refusal (``DispatchRefused``) is no
            # exception to that: the binding cannot dead-letter with a reason, so in Azure the
            # message comes back until MaxDeliveryCountExceeded, and here too (the local queue
            # counts deliveries the same way). The reason is in the ledger and in this log line.
            queue.abandon(message)
            reason = getattr(exc, "reason", None)
            log_event(
                logger,
                "message_refused" if reason else "message_abandoned",
                message_id=message.message_id,
                reason=reason,
                error=str(exc),
                delivery_count=message.delivery_count,
                correlation_id=message.correlation_id,
                level=logging.WARNING,
            )
        else:
            queue.complete(message)

    # --- timers -------------------------------------------------------------------------------

    def _timer_loop(self) -> None:
        from azure.functions.timer import TimerRequest

        now = self._clock()
        for timer in self.functions.timers:
            timer.next_due = now if timer.run_on_startup else timer.cron.next_after(now)
        while not self._stopping.is_set():
            now = self._clock()
            for timer in self.functions.timers:
                if timer.next_due is not None and timer.next_due <= now:
                    past_due = (now - timer.next_due).total_seconds() > 60
                    try:
                        timer.function(**{timer.arg_name: TimerRequest(past_due=past_due)})
                    except Exception:
                        logger.exception("timer %s failed", timer.name)
                    timer.next_due = timer.cron.next_after(max(now, timer.next_due))
            self._stopping.wait(min(1.0, self._poll * 5))


def main_loop(host: LocalHost) -> None:
    """Run until Ctrl-C or SIGTERM, then stop cleanly."""
    import signal

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping: finishing in-flight work…", file=sys.stderr)
        host.stop()
