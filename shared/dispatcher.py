"""The dispatcher: one queue message in, at most one ACR run out.

Order matters: validate (a message that can never succeed is refused before any side
effect), claim the request id in the ledger with a conditional create (a redelivered or
duplicated message finds the claim and starts nothing), render, start the run, record it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.build_request import BuildRequest
from shared.config import SlipwayConfig, Target
from shared.ledger import Ledger, LedgerRecord, RunStatus
from shared.logs import log_event
from shared.run_backend import PermanentBackendError, RunBackend, TransientBackendError
from shared.task_render import RenderError, RunSecrets, render_run

if TYPE_CHECKING:
    from shared.build_status import BuildStatusNotifier
    from shared.state import StateStore

logger = logging.getLogger("slipway.dispatch")

# Longer than any invocation can run (host.json functionTimeout is 5 minutes): a claim older than
# this belongs to an attempt that died.
CLAIM_LEASE = timedelta(minutes=10)


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class DispatchResult:
    outcome: Outcome
    request_id: str | None = None
    run_id: str | None = None
    reason: str | None = None
    description: str | None = None


def build_fingerprint(request: BuildRequest) -> str:
    """Hash of what the build does, so that a retry with a new timestamp is the same build but a
    different build under a reused id is caught."""
    essential = request.model_dump(
        mode="json", include={"target", "source", "image", "platforms", "build_args", "cache"}
    )
    return hashlib.sha256(json.dumps(essential, sort_keys=True).encode()).hexdigest()


class MissingSecret(Exception):
    """A setting the target needs for a real run is not set."""


def resolve_secrets(
    config: SlipwayConfig, target: Target, settings: Mapping[str, str], *, required: bool
) -> RunSecrets:
    """Secrets from app settings (Key Vault references in Azure). ``required`` for real runs."""

    def get(name: str) -> str | None:
        value = settings.get(name) or None
        if value is None and required:
            raise MissingSecret(f"setting {name} is not set")
        return value

    cache_key = tenant = client = secret = None
    if config.cache is not None:
        if config.cache.auth == "account-key":
            cache_key = get("SLIPWAY_CACHE_ACCOUNT_KEY")
        else:
            tenant = get("SLIPWAY_CACHE_TENANT_ID")
            client = get("SLIPWAY_CACHE_CLIENT_ID")
            secret = get("SLIPWAY_CACHE_CLIENT_SECRET")
    git_token = get(target.git_token_setting) if target.git_token_setting else None
    return RunSecrets(
        cache_account_key=cache_key,
        cache_tenant_id=tenant,
        cache_client_id=client,
        cache_client_secret=secret,
        git_token=git_token,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        *,
        config: Callable[[], SlipwayConfig],
        ledger: Ledger,
        backend: RunBackend,
        settings: Mapping[str, str],
        clock: Callable[[], datetime] = _utcnow,
        state: StateStore | None = None,
        notifier: BuildStatusNotifier | None = None,
    ) -> None:
        """``state`` receives the last build of each target's default branch (none: not recorded);
        ``notifier`` posts the ``pending`` commit status of a started run (none: no statuses)."""
        self._config = config
        self._ledger = ledger
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._state = state
        self._notifier = notifier

    def dispatch(
        self, body: bytes | str, *, message_id: str | None = None, delivery_count: int = 1
    ) -> DispatchResult:
        try:
            request = BuildRequest.from_json(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            return self._dead_letter(
                None, None, "InvalidBuildRequest", f"the message is not a BuildRequest v1: {problems}"
            )
        correlation_id = request.trigger.correlation_id
        try:
            config = self._config()
        except Exception as exc:
            # The operator can fix the file; the message stays and is retried.
            return self._retry(request, f"configuration cannot be loaded: {exc}")
        target = config.target(request.target)
        if target is None:
            return self._dead_letter(
                request, None, "UnknownTarget", f"target {request.target!r} is not in the configuration"
            )
        try:
            secrets = resolve_secrets(
                config, target, self._settings, required=self._backend.name != "dry-run"
            )
            spec = render_run(request, config, secrets)
        except MissingSecret as exc:
            return self._dead_letter(
                request, None, "MissingSetting", f"{exc}; set it, then replay this message"
            )
        except RenderError as exc:
            return self._dead_letter(request, None, "InvalidBuildRequest", str(exc))

        now = self._clock()
        fingerprint = build_fingerprint(request)
        record = LedgerRecord(
            request_id=request.id,
            target=request.target,
            status=RunStatus.DISPATCHING,
            created_at=now,
            updated_at=now,
            correlation_id=correlation_id,
            payload_hash=fingerprint,
            request=json.loads(request.to_json()),
            backend=self._backend.name,
            task_yaml=spec.task_yaml,
            run_request=spec.redacted(),
            attempts=1,
            history=[{"at": now.isoformat(), "event": "claimed", "detail": f"message {message_id}"}],
        )
        if not self._ledger.create(record):
            claimed = self._claim_existing(request, fingerprint, message_id)
            if isinstance(claimed, DispatchResult):
                return claimed
            record, etag = claimed
        else:
            found = self._ledger.get(request.id)
            assert found is not None, "a record just created must be readable"
            record, etag = found

        try:
            handle = self._backend.start(spec, request_id=request.id, correlation_id=correlation_id)
        except TransientBackendError as exc:
            self._update(
                record, etag, status=RunStatus.RETRYING, error=str(exc), event="start_failed_transient"
            )
            return self._retry(request, f"{self._backend.name} is unavailable: {exc}")
        except PermanentBackendError as exc:
            self._update(record, etag, status=RunStatus.FAILED, error=str(exc), event="start_refused")
            return self._dead_letter(
                request, record, "RunRejected", f"{self._backend.name} refused the run: {exc}"
            )

        dispatched = self._update(
            record,
            etag,
            status=RunStatus.DISPATCHED,
            run_id=handle.run_id,
            run_status=handle.status,
            event="run_started",
            detail=handle.run_id,
        )
        log_event(
            logger,
            "run_started",
            correlation_id=correlation_id,
            request_id=request.id,
            target=request.target,
            backend=handle.backend,
            run_id=handle.run_id,
            delivery_count=delivery_count,
        )
        self._record_last_build(request, target)
        if dispatched is not None:
            self._post_pending(*dispatched)
        return DispatchResult(Outcome.DISPATCHED, request.id, handle.run_id)

    def _post_pending(self, record: LedgerRecord, etag: str) -> None:
        """Tell the Git host the build is under way; best effort, after the run is safely recorded.

        When the host cannot be reached, reconciliation posts ``pending`` (or the outcome) later.
        """
        from shared.commit_status import CommitState

        if self._notifier is None or not self._notifier.notify(record, CommitState.PENDING):
            return
        try:
            self._ledger.replace(record.model_copy(update={"commit_status": CommitState.PENDING.value}), etag)
        except Exception as exc:  # reconciliation posts it again, which is harmless
            log_event(
                logger,
                "ledger_update_failed",
                level=logging.WARNING,
                request_id=record.request_id,
                error=str(exc),
            )

    def _record_last_build(self, request: BuildRequest, target: Target) -> None:
        """Remember a default-branch push as the commit that base-image updates rebuild.

        The run has started: a failure here is logged and never turns into a retry, which could
        start a second run. The next default-branch push records again.
        """
        if self._state is None:
            return
        from shared.last_build import is_default_branch_push, record_last_build

        if not is_default_branch_push(request, target.default_branch):
            return
        try:
            recorded = record_last_build(self._state, request, now=self._clock())
        except Exception as exc:
            log_event(
                logger,
                "last_build_not_recorded",
                level=logging.ERROR,
                correlation_id=request.trigger.correlation_id,
                request_id=request.id,
                target=request.target,
                error=str(exc),
            )
            return
        log_event(
            logger,
            "last_build_recorded",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            target=request.target,
            commit=recorded.commit if recorded else None,
            kept_newer=recorded is not None and recorded.request_id != request.id,
        )

    def _claim_existing(
        self, request: BuildRequest, fingerprint: str, message_id: str | None
    ) -> DispatchResult | tuple[LedgerRecord, str]:
        found = self._ledger.get(request.id)
        if found is None:  # deleted between create and get: let the redelivery try again
            return self._retry(request, "ledger record vanished while claiming")
        existing, etag = found
        if existing.payload_hash != fingerprint:
            return self._dead_letter(
                request,
                None,
                "IdConflict",
                f"request id {request.id} was already used for a different build; send it with a new id",
            )
        if existing.status is RunStatus.RETRYING:
            # A previous attempt failed before any run started: claim it again, exactly once.
            from shared.ledger import ConflictError

            now = self._clock()
            claimed = existing.model_copy(
                update={
                    "status": RunStatus.DISPATCHING,
                    "updated_at": now,
                    "attempts": existing.attempts + 1,
                    "history": [
                        *existing.history,
                        {"at": now.isoformat(), "event": "reclaimed", "detail": message_id},
                    ],
                }
            )
            try:
                new_etag = self._ledger.replace(claimed, etag)
            except ConflictError:
                return self._duplicate(request, "another delivery claimed it first")
            return claimed, new_etag
        if existing.status is RunStatus.DISPATCHING:
            # Another delivery holds the claim. While it may still be working, retry later; once
            # the claim is older than any invocation can live, the holder died somewhere between
            # claiming and recording: it may or may not have started a run, so never guess — stop,
            # and tell the operator what to check. Never complete it silently as a duplicate.
            age = self._clock() - existing.updated_at
            if age < CLAIM_LEASE:
                return self._retry(request, "another delivery is dispatching this request")
            return self._dead_letter(
                request,
                existing,
                "DispatchInterrupted",
                f"a previous attempt claimed {request.id} at {existing.updated_at.isoformat()} and stopped "
                "before recording a run; check the registry's runs for this request id, then replay if none",
            )
        if existing.status is RunStatus.FAILED:
            # Refused for good earlier: refuse every redelivery the same way, so the message ends in
            # the dead-letter queue (not completed as a duplicate) and the reason stays readable.
            return self._dead_letter(
                request, existing, "RunRejected", existing.error or "the run was refused earlier"
            )
        return self._duplicate(request, f"already {existing.status.value} (run {existing.run_id or '-'})")

    def _update(
        self,
        record: LedgerRecord,
        etag: str,
        *,
        status: RunStatus,
        event: str,
        detail: str | None = None,
        **fields: object,
    ) -> tuple[LedgerRecord, str] | None:
        """Write the record's new state; the written record and its ETag, or None if that failed."""
        now = self._clock()
        updated = record.model_copy(
            update={
                "status": status,
                "updated_at": now,
                "history": [
                    *record.history,
                    {"at": now.isoformat(), "event": event, "detail": detail or fields.get("error")},
                ],
                **fields,
            }
        )
        try:
            return updated, self._ledger.replace(updated, etag)
        except Exception as exc:  # the run has started; a ledger hiccup must not start another
            log_event(
                logger,
                "ledger_update_failed",
                level=logging.ERROR,
                request_id=record.request_id,
                error=str(exc),
            )
            return None

    def _duplicate(self, request: BuildRequest, why: str) -> DispatchResult:
        log_event(
            logger,
            "duplicate_ignored",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            reason=why,
        )
        return DispatchResult(Outcome.DUPLICATE, request.id, reason=why)

    def _retry(self, request: BuildRequest, why: str) -> DispatchResult:
        log_event(
            logger,
            "dispatch_retry",
            level=logging.WARNING,
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            reason=why,
        )
        return DispatchResult(Outcome.RETRY, request.id, reason="Transient", description=why)

    def _dead_letter(
        self, request: BuildRequest | None, record: LedgerRecord | None, reason: str, description: str
    ) -> DispatchResult:
        log_event(
            logger,
            "dispatch_refused",
            level=logging.ERROR,
            correlation_id=request.trigger.correlation_id if request else None,
            request_id=request.id if request else None,
            reason=reason,
            description=description,
        )
        return DispatchResult(
            Outcome.DEAD_LETTER, request.id if request else None, reason=reason, description=description
        )
