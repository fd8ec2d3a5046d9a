"""Adapters chosen from settings, built lazily and once per process.

This is the one place that decides Service Bus or the local queue, Blob or a folder for the
ledger and the state store, ACR or dry-run for runs. ``function_app.py`` and the local host both
use it, so the very same function objects run in Azure and on a laptop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.acr.run_backend import RunBackend
    from shared.dispatch.dispatcher import Dispatcher
    from shared.intake.receivers.pipeline import ReceiverContext
    from shared.model.config import SlipwayConfig
    from shared.platform.ledger import Ledger
    from shared.platform.queue.port import QueueSender
    from shared.platform.state import StateStore
    from shared.runs.build_status import BuildStatusNotifier
    from shared.runs.reconcile import Reconciler

APP_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QUEUE = "build-requests"


class StateFolderMissing(Exception):
    """A command that only reads state found no local state folder (it creates none)."""


def service_bus_configured(settings: Mapping[str, str]) -> bool:
    return bool(
        settings.get("ServiceBusConnection") or settings.get("ServiceBusConnection__fullyQualifiedNamespace")
    )


def acr_configured(settings: Mapping[str, str]) -> bool:
    return all(settings.get(k) for k in ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME"))


class Runtime:
    """Lazily built adapters; ``settings`` defaults to the live process environment."""

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        app_root: Path = APP_ROOT,
        queue: QueueSender | None = None,
        ledger: Ledger | None = None,
        backend: RunBackend | None = None,
        state: StateStore | None = None,
        clock: Callable[[], datetime] | None = None,
        require_state: bool = False,
    ) -> None:
        """Adapters passed here win over the ones the settings would choose (local host, tests);
        ``clock`` drives the dispatcher's waits and retries (tests). With ``require_state`` a
        local adapter is built only in an existing state folder (``StateFolderMissing``): the CLI's
        read-only commands must not leave an empty ``.slipway/`` behind a mistyped path."""
        self.settings: Mapping[str, str] = settings if settings is not None else os.environ
        self.app_root = app_root
        self._lock = threading.Lock()
        self._config_cache: tuple[Path, float, SlipwayConfig] | None = None
        self._queue = queue
        self._ledger = ledger
        self._backend = backend
        self._state = state
        self._clock = clock
        self._require_state = require_state
        self._receiver_context: ReceiverContext | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.get("SLIPWAY_STATE_DIR") or ".slipway").resolve()

    @property
    def queue_name(self) -> str:
        return self.settings.get("BUILD_QUEUE") or DEFAULT_QUEUE

    def config(self) -> SlipwayConfig:
        """The configuration, re-read when the file changes (cheap stat per call)."""
        from shared.model.config import config_path, load_config

        path = config_path(self.settings, self.app_root)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return load_config(path)  # raises ConfigError naming the file and why it cannot be read
        cached = self._config_cache
        if cached and cached[0] == path and cached[1] == mtime:
            return cached[2]
        config = load_config(path)
        self._config_cache = (path, mtime, config)
        return config

    def queue(self) -> QueueSender:
        # Set once and never replaced: every webhook after the first reads it without the lock.
        if (queue := self._queue) is not None:
            return queue
        with self._lock:
            if self._queue is None:
                if service_bus_configured(self.settings):
                    from shared.platform.queue.servicebus import ServiceBusQueue

                    self._queue = ServiceBusQueue.from_settings(self.settings, queue_name=self.queue_name)
                else:
                    self._queue = self.local_queue()
            return self._queue

    def _local_state(self) -> None:
        """Before a local adapter is built: the state folder exists, or may be created."""
        if self._require_state and not self.state_dir.is_dir():
            raise StateFolderMissing(
                f"no state folder {self.state_dir}: nothing has run with this state yet; point at the "
                "one `slipway serve` uses with --state-dir DIR (or SLIPWAY_STATE_DIR, or --settings FILE)"
            )

    def local_queue(self) -> LocalQueue:
        from shared.platform.queue.local import LocalQueue

        self._local_state()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return LocalQueue(self.state_dir / "queue.sqlite3", name=self.queue_name)

    def ledger(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                from shared.platform.ledger import ledger_from_settings
                from shared.platform.storage import storage_configured

                if not storage_configured(self.settings):
                    self._local_state()
                self._ledger = ledger_from_settings(self.settings, state_dir=self.state_dir)
            return self._ledger

    def state(self) -> StateStore:
        """Small documents kept between invocations (last builds); Blob or a local folder."""
        with self._lock:
            if self._state is None:
                from shared.platform.state import state_from_settings
                from shared.platform.storage import storage_configured

                if not storage_configured(self.settings):
                    self._local_state()
                self._state = state_from_settings(self.settings, state_dir=self.state_dir)
            return self._state

    def backend(self) -> RunBackend:
        with self._lock:
            if self._backend is None:
                from shared.acr.run_backend import AcrBackend, DryRunBackend

                self._backend = (
                    AcrBackend.from_settings(self.settings)
                    if acr_configured(self.settings)
                    else DryRunBackend()
                )
            return self._backend

    def dispatcher(self) -> Dispatcher:
        from shared.dispatch.coalesce import PendingRequests
        from shared.dispatch.dispatcher import Dispatcher

        queue = self.queue()
        return Dispatcher(
            config=self.config,
            ledger=self.ledger(),
            backend=self.backend(),
            settings=self.settings,
            state=self.state(),
            # Inside the queue trigger: a short retry budget, reconciliation retries later.
            notifier=self.status_notifier(max_attempts=2, max_delay=5.0),
            # Delayed retries and waits are scheduled copies on the build queue itself.
            queue=queue,
            pending=queue if isinstance(queue, PendingRequests) else None,
            clock=self._clock or _utcnow,
        )

    def status_notifier(self, *, max_attempts: int = 4, max_delay: float = 30.0) -> BuildStatusNotifier:
        """Commit statuses to the Git hosts whose tokens are set (none set: statuses are off)."""
        from shared.runs.build_status import BuildStatusNotifier
        from shared.runs.commit_status import StatusReporter

        reporter = StatusReporter(self.settings, max_attempts=max_attempts, max_delay=max_delay)
        return BuildStatusNotifier(reporter, self.settings, config=self.config)

    def reconciler(self) -> Reconciler:
        from shared.acr.run_backend import AcrBackend
        from shared.runs.reconcile import Reconciler

        backend = self.backend()
        on_finished = None
        if isinstance(backend, AcrBackend):  # gates and quarantine need the run's log
            from shared.acr.quarantine import quarantine_client_from_settings
            from shared.runs.run_outcome import AcrRunLog, SupplyChainOutcome

            on_finished = SupplyChainOutcome(
                config=self.config,
                log_lines=AcrRunLog(backend),
                quarantine=lambda registry: quarantine_client_from_settings(self.settings, registry),
            )
        from shared.dispatch.pr_closed import ClosedPullRequests
        from shared.platform.ledger import export_from_settings, retention_from_settings

        closed = ClosedPullRequests(self.ledger(), backend, self.state(), self._clock or _utcnow)
        return Reconciler(
            ledger=self.ledger(),
            backend=backend,
            notifier=self.status_notifier(),
            on_finished=on_finished,
            retention=retention_from_settings(self.settings),
            export=export_from_settings(self.settings),
            cancel_if=closed.cancel_if_closed,
        )

    def receiver_context(self) -> ReceiverContext:
        """One context for every webhook: it only holds this runtime's accessors."""
        if self._receiver_context is None:
            from shared.intake.receivers.pipeline import ReceiverContext

            self._receiver_context = ReceiverContext(
                settings=self.settings,
                config=lambda: self.config(),
                queue=lambda: self.queue(),
                state=lambda: self.state(),
            )
        return self._receiver_context


if TYPE_CHECKING:
    from shared.platform.queue.local import LocalQueue

_runtime: Runtime | None = None


def _utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def runtime() -> Runtime:
    """The process-wide runtime (the Functions worker reuses the process across invocations)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def current_runtime() -> Runtime | None:
    """The installed runtime, if any (``runtime()`` would build one)."""
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Install a runtime (tests, the local host)."""
    global _runtime
    _runtime = value
