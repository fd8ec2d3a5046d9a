"""The commit each target last built on its default branch: what a base-image update rebuilds.

A base image update must rebuild what is deployed, which is the default branch's last build,
not whatever the branch points at by the time the update arrives (that commit may never have
passed review for a build of its own). The dispatcher records it after each successful dispatch
of a push to the default branch, as ``last-build/<target>.json`` in the state store.

Deliveries are unordered, and a request may be dispatched later than a newer one (a retry), so a
record only moves forward: a push received earlier than the recorded one never replaces it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from shared.model.build_request import BuildRequest
from shared.platform.logs import log_event
from shared.platform.state import StateStore, update, validate_key

logger = logging.getLogger("slipway.state")
KEY_PREFIX = "last-build/"


class LastBuild(BaseModel):
    """One target's last dispatched build of its default branch."""

    model_config = ConfigDict(extra="ignore")

    target: str
    repo_url: str
    ref: str
    commit: str
    request_id: str
    received_at: datetime
    recorded_at: datetime
    # The default branch the build was routed with (what the sender reported, or the target's
    # default_branch). Absent in older records: their branch was the default when recorded.
    default_branch: str | None = None

    @field_validator("received_at", "recorded_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Compared with other records' times: a naive time means UTC, as in the ledger.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def reported_default(self) -> str | None:
        """The default branch this record reports to a rebuild: only default-branch pushes are recorded."""
        return self.default_branch or self.branch


def last_build_key(target: str) -> str:
    return validate_key(f"{KEY_PREFIX}{target}.json")


def is_default_branch_push(request: BuildRequest, configured_default: str | None) -> bool:
    """A push (not a tag, rebuild or replay) of a known commit to the target's default branch.

    ``source.default_branch`` is what routing resolved with ``default_branch_for`` (None: no
    branch is the default, so nothing is recorded); the configured default still wins, as there.
    """
    default = configured_default or request.source.default_branch
    return (
        request.trigger.kind == "push"
        and request.source.commit is not None
        and default is not None
        and request.source.ref == f"refs/heads/{default}"
    )


def read_last_build(store: StateStore, target: str) -> LastBuild | None:
    """The record, or None when there is none or it cannot be read (logged: a rebuild falls back
    to the branch head rather than failing every delivery on one bad document)."""
    key = last_build_key(target)
    try:
        found = store.get(key)
    except ValueError as exc:  # not JSON
        log_event(logger, "last_build_unreadable", level=logging.WARNING, key=key, error=str(exc))
        return None
    if found is None:
        return None
    try:
        return LastBuild.model_validate(found.value)
    except ValidationError as exc:
        log_event(logger, "last_build_unreadable", level=logging.WARNING, key=key, error=str(exc))
        return None


def record_last_build(store: StateStore, request: BuildRequest, *, now: datetime) -> LastBuild | None:
    """Record ``request`` as its target's last build, unless a later push is recorded already.

    Returns what is recorded afterwards (None when the stored document is not a record).
    """
    assert request.source.commit is not None, "only builds of a known commit are recorded"
    wanted = LastBuild(
        target=request.target,
        repo_url=request.source.repo_url,
        ref=request.source.ref,
        commit=request.source.commit,
        request_id=request.id,
        received_at=request.trigger.received_at,
        recorded_at=now,
        default_branch=request.source.default_branch,
    )

    def change(current: dict[str, object] | None) -> dict[str, object] | None:
        if current is not None:
            try:
                recorded = LastBuild.model_validate(current)
            except ValidationError:
                recorded = None  # an unreadable record is replaced
            if recorded is not None and recorded.received_at > wanted.received_at:
                return None
        return wanted.model_dump(mode="json")

    key = last_build_key(request.target)
    try:
        stored = update(store, key, change)
    except ValueError:  # a document that is not JSON at all: replace it rather than fail forever
        log_event(logger, "last_build_unreadable", level=logging.WARNING, key=key, error="not JSON; replaced")
        store.delete(key)
        stored = update(store, key, change)
    try:
        return None if stored is None else LastBuild.model_validate(stored)
    except ValidationError:
        return None
