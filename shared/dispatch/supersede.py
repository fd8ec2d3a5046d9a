"""A request that starts no run because a newer one on its coalesce key serves it.

``shared.dispatch.coalesce`` says which request on a key is the newest. Here the older request
is recorded as ``superseded`` (so a redelivery is a duplicate and ``runs show`` says by whom), and
the run serving a superseded rebuild notes which rebuild it also serves. The runs a started run
makes redundant are cancelled in ``shared.dispatch.started``.
"""

from __future__ import annotations

from datetime import datetime

from shared.acr.run_backend import RunBackend
from shared.dispatch.claims import new_record
from shared.dispatch.coalesce import Newer, is_rebuild
from shared.dispatch.outcome import DispatchResult, Outcome, ledger_failed, logger, retry_now
from shared.model.build_request import BuildRequest
from shared.platform.ledger import ConflictError, Ledger, RunStatus
from shared.platform.logs import log_event


class Superseding:
    """Records a superseded request in ``ledger``, as not started on ``backend``."""

    def __init__(self, ledger: Ledger, backend: RunBackend) -> None:
        self._ledger = ledger
        self._backend = backend

    def supersede(
        self, request: BuildRequest, newer: Newer, now: datetime, message_id: str | None
    ) -> DispatchResult:
        """Record that ``request`` starts no run because ``newer`` serves it."""
        detail = f"by {newer.request_id} (message {message_id})"
        if is_rebuild(request):
            detail += f"; the {request.trigger.kind} rebuild is served by " + (
                "that pending push" if newer.pending else "that run, started after it was received"
            )
        record = new_record(
            request,
            RunStatus.SUPERSEDED,
            now,
            "superseded",
            detail,
            backend=self._backend.name,
            following=False,
        )
        if not self._ledger.create(record):
            found = self._ledger.get(request.id)
            if found is None or found[0].status is not RunStatus.RETRYING:
                return retry_now(request, "the ledger record changed while superseding")
            existing, etag = found
            try:
                self._ledger.replace(
                    existing.with_event(
                        now, "superseded", detail, status=RunStatus.SUPERSEDED, following=False
                    ),
                    etag,
                )
            except ConflictError:
                return retry_now(request, "the ledger record changed while superseding")
        log_event(
            logger,
            "request_superseded",
            correlation_id=request.trigger.correlation_id,
            request_id=request.id,
            target=request.target,
            superseded_by=newer.request_id,
        )
        if is_rebuild(request):
            self._note_served_rebuild(request, newer.request_id, now)
        return DispatchResult(
            Outcome.SUPERSEDED, request.id, reason="Superseded", description=f"by {newer.request_id}"
        )

    def _note_served_rebuild(self, rebuild: BuildRequest, by: str, now: datetime) -> None:
        """Record on the serving run's ledger record which rebuild it also serves, and why.

        Best effort: the rebuild's own record names the run that serves it either way.
        """
        trigger = rebuild.trigger
        detail = (
            f"{rebuild.id}: {trigger.kind} from {trigger.provider}"
            f"{f' (delivery {trigger.delivery_id})' if trigger.delivery_id else ''}"
            f", received {trigger.received_at.isoformat()}, correlation {trigger.correlation_id}"
        )
        for _ in range(3):
            found = self._ledger.get(by)
            if found is None or found[0].status in (RunStatus.DISPATCHING, RunStatus.RETRYING):
                return  # not started: nothing to note on (a superseded rebuild names it anyway)
            record, etag = found
            if any(entry.get("detail") == detail for entry in record.history):
                return
            try:
                self._ledger.replace(record.with_event(now, "covers_rebuild", detail), etag)
            except ConflictError:
                continue
            except Exception as exc:
                ledger_failed(by, exc)
            return
