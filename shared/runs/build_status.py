"""What the Git host is told about a build: the commit status for a ledger record.

The dispatcher posts ``pending`` once a run has started; reconciliation posts the outcome when
the run ends. Both go through ``BuildStatusNotifier`` so the wording, the link and the rules
(no status for a dry run, nor for a build of a branch head whose commit is unknown) are the same.
A pull-request build's status is its own (``slipway/<target>/pr``) and goes where its host shows
it on the request (``CommitStatus.pull_request``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.model.repo_urls import https_clone_url
from shared.platform.logs import log_event
from shared.runs.commit_status import (
    CommitState,
    CommitStatus,
    PullRequestRef,
    StatusReporter,
    context_for,
    portal_run_url,
)

if TYPE_CHECKING:
    from shared.model.config import SlipwayConfig
    from shared.platform.ledger import LedgerRecord

logger = logging.getLogger("slipway.commit_status")

_STATE_FOR_RUN = {
    "Succeeded": CommitState.SUCCESS,
    "Failed": CommitState.FAILURE,
    "Timeout": CommitState.FAILURE,
    "Canceled": CommitState.ERROR,
    "Error": CommitState.ERROR,
}


def state_for_run(run_status: str) -> CommitState:
    """The commit state for an ACR run status; anything not ended is ``pending``."""
    return _STATE_FOR_RUN.get(run_status, CommitState.PENDING)


def _duration(started: datetime | None, finished: datetime | None) -> str | None:
    if started is None or finished is None or finished < started:
        return None
    seconds = int((finished - started).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


# A run stopped by one of its gates: the sentence leads with the gate (GitHub keeps 140 characters).
_GATE_SENTENCES = {
    "scan": "Scan gate failed: {detail}; release tags were not moved",
    "platform-check": "Platform check failed: {detail}; release tags were not moved",
}


def gate_failure(gate: str, detail: str) -> str:
    """The run error for a failed gate (``scan``, ``platform-check``), a sentence that names it."""
    return _GATE_SENTENCES[gate].format(detail=detail)


def _is_gate_failure(error: str | None) -> bool:
    return error is not None and error.startswith(tuple(s.split(":")[0] for s in _GATE_SENTENCES.values()))


def describe(record: LedgerRecord) -> str:
    """One sentence a developer understands, for the commit status and the ledger."""
    image = record.request.get("image", {})
    repository, tags = image.get("repository", "?"), image.get("tags") or ["?"]
    run = f"ACR run {record.run_id}" if record.run_id else "the ACR run"
    status = record.run_status or ""
    took = _duration(record.run_started_at, record.run_finished_at)
    if record.cancelled_by and status != "Succeeded":  # a run that ended first keeps its outcome
        who = record.cancelled_by[:60]
        return f"{run} cancelled by {who}" if record.run_id else f"Cancelled by {who} before it started"
    if status == "Succeeded":
        # A pull request's push: none build exported its cache only: its image went nowhere.
        cache_only = (record.request.get("pull_request") or {}).get("push") == "none"
        built = (
            f"Built {repository}:{tags[0]}, pushed nowhere"
            if cache_only
            else f"Built and pushed {repository}:{tags[0]}"
        )
        return built + (f" in {took}" if took else "")
    if status == "Timeout":
        return f"{run} timed out" + (f" after {took}" if took else "")
    if status == "Canceled":
        return f"{run} was canceled"
    if status in ("Failed", "Error") and _is_gate_failure(record.run_error):
        return f"{record.run_error} ({run})"
    if status in ("Failed", "Error"):
        return f"{run} failed: {record.run_error}" if record.run_error else f"{run} failed; see its log"
    if not record.following:
        return f"Slipway stopped following {run}: {record.run_error or 'no outcome'}"
    platforms = ", ".join(record.request.get("platforms") or [])
    return f"Building {repository}:{tags[0]} for {platforms} ({run})"


def _provider(record: LedgerRecord) -> str | None:
    provider = record.request.get("trigger", {}).get("provider")
    return provider if isinstance(provider, str) else None


def _pull_request_of(request: Mapping[str, Any]) -> PullRequestRef | None:
    """The request a pull-request build builds (its ``pull_request`` section), or None.

    The section was checked when the request was (``BuildRequest``: its head commit is
    ``source.commit``); this only reads it back from the record.
    """
    section = request.get("pull_request")
    if not isinstance(section, Mapping):
        return None
    return PullRequestRef(
        number=int(section["number"]),
        head_branch=str(section["head_ref"]).removeprefix("refs/heads/"),
        fork=bool(section["fork"]),
    )


class BuildStatusNotifier:
    """Posts a record's commit status; never raises (``StatusReporter`` retries and logs).

    The repository a status is posted for, and so the host the status token is sent to, is the
    target's configured ``repo`` (with the settings' API URLs), never the ``source.repo_url`` a
    record carries: that came from a queue message, which more principals can write than the
    configuration.
    """

    def __init__(
        self,
        reporter: StatusReporter,
        settings: Mapping[str, str],
        *,
        config: Callable[[], SlipwayConfig],
    ) -> None:
        self._reporter = reporter
        self._settings = settings
        self._config = config

    def _configured_repo(self, target: str) -> str | None:
        """The target's repository as an https URL; None when the target (or the config) is gone."""
        try:
            config = self._config()
        except Exception:  # a broken configuration costs a status, never the build
            return None
        found = next((t for t in config.targets if t.name == target), None)
        return https_clone_url(found.repo) if found is not None else None

    def status_for(self, record: LedgerRecord, state: CommitState) -> CommitStatus | None:
        """None when no status applies: a dry run, a rebuild of a ref's head (no commit), a
        target no longer configured (no repository Slipway vouches for), or a pull request whose
        host has nowhere Slipway's token may put it (a Bitbucket fork's)."""
        source: Mapping[str, Any] = record.request.get("source", {})
        commit = source.get("commit")
        if record.backend != "acr" or not commit:
            return None
        repo_url = self._configured_repo(record.target)
        if repo_url is None:
            return None
        pull_request = _pull_request_of(record.request)
        status = CommitStatus(
            repo_url=repo_url,
            commit=commit,
            state=state,
            description=describe(record),
            context=context_for(record.target, pull_request=pull_request is not None),
            target_url=self._run_link(record.run_id),
            pull_request=pull_request,
        )
        if pull_request is not None:
            refusal = self._reporter.refusal(status, provider_hint=_provider(record))
            if refusal is not None:
                log_event(
                    logger,
                    "commit_status_not_postable",
                    correlation_id=record.correlation_id,
                    target=record.target,
                    pull_request=pull_request.number,
                    reason=refusal,
                )
                return None
        return status

    def notify(self, record: LedgerRecord, state: CommitState) -> bool:
        """True when the host accepted the status (False also when none applies)."""
        status = self.status_for(record, state)
        if status is None:
            return False
        return self._reporter.report(
            status, provider_hint=_provider(record), correlation_id=record.correlation_id
        )

    def _run_link(self, run_id: str | None) -> str | None:
        """The run in the Azure portal (never a SAS log link: a status is public to repo readers)."""
        names = [self._settings.get(k) for k in ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")]
        if not run_id or not all(names):
            return None
        subscription, group, registry = (str(n) for n in names)
        return portal_run_url(
            subscription, group, registry, run_id, tenant=self._settings.get("SLIPWAY_PORTAL_TENANT", "")
        )
