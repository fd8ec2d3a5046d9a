"""The local host: runs the very function objects ``function_app.py`` registers, on one machine.

HTTP triggers are served under ``/api/`` by a threaded HTTP server (``http_front.py``), the
Service Bus trigger is fed from the local queue (SQLite, Service Bus semantics), timer triggers
fire on their schedules (``timers.py``). What runs is found by ``functions.discover``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from shared.app.local_host.functions import AppFunctions, QueueTrigger
from shared.app.local_host.http_front import HttpFront
from shared.app.local_host.timers import run_timers
from shared.platform.http import DEFAULT_MAX_BODY_BYTES
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.host")


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
        self._clock = clock
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        master_key = master_key or None
        front = HttpFront(
            functions,
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            master_key=master_key,
            require_keys=require_keys or master_key is not None,
        )
        self._server = ThreadingHTTPServer((host, port), front.handler_class())
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
        run_timers(self.functions.timers, self._clock, self._stopping, min(1.0, self._poll * 5))


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
