"""The host-neutral part of a commit status: its states, its fields, its link, where its repository lives.

Nothing here does I/O; the host clients map these values onto their APIs and ``transport``
sends them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlsplit

from shared.model.build_request import COMMIT_RE
from shared.model.repo_urls import RepoLocation, parse_repo_url
from shared.platform.errors import ServiceError
from shared.platform.logs import log_event

logger = logging.getLogger("slipway.commit_status")

PORTAL_URL = "https://portal.azure.com"


class CommitState(StrEnum):
    """Slipway's states; each client maps them onto its host's vocabulary."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class PullRequestRef:
    """The pull (merge) request a status is for: where each host shows a PR build's status.

    ``number`` is the request's number on its host (GitLab's ``iid``, Azure DevOps'
    ``pullRequestId``), ``head_branch`` the source branch without ``refs/heads/``, ``fork`` whether
    that branch lives in another repository than the configured one.
    """

    number: int
    head_branch: str
    fork: bool


class StatusNotPostable(Exception):
    """The host has nowhere Slipway's token may put this status (reported, never retried)."""


@dataclass(frozen=True)
class CommitStatus:
    """One status for one commit, host-neutral; clients truncate fields to their host's limits.

    ``context`` names the status so later ones replace it (``context_for(target)``). A
    ``target_url`` that is not a plain http(s) link, or that carries credentials (user info, a
    SAS ``sig``), is dropped: statuses are public to every reader of the repository.
    ``pull_request`` is set for a pull-request build: each client then puts the status where the
    host shows it on the request (``commit`` is then the request's head commit).
    """

    repo_url: str
    commit: str
    state: CommitState
    description: str
    context: str
    target_url: str | None = None
    pull_request: PullRequestRef | None = None

    def __post_init__(self) -> None:
        if not COMMIT_RE.match(self.commit):
            raise ValueError("commit must be a full lowercase hex commit id")
        object.__setattr__(self, "state", CommitState(self.state))
        if self.target_url is not None and not _is_shareable_link(self.target_url):
            log_event(
                logger,
                "commit_status_link_dropped",
                level=logging.WARNING,
                commit=self.commit,
                context=self.context,
                reason="not a plain http(s) link without credentials",
            )
            object.__setattr__(self, "target_url", None)


def context_for(target: str, *, pull_request: bool = False) -> str:
    """The status name of a target: one status per target and commit, updated in place.

    A pull-request build's is ``slipway/<target>/pr``: every host keys a commit's statuses by this
    name (GitHub and Gitea by context, GitLab by name, Bitbucket by key, Azure DevOps by genre and
    name), and the commit a PR builds is often a branch head a push build of the same target
    also builds. Its own name keeps a PR build (cache-only, or pushed to a scratch repository,
    maybe for fewer platforms) from ever replacing the push build's status, or standing in for
    it in a required check; a target name has no ``/``, so no target's push status is named so.
    The number is left out so the name is fixed, as a required check needs.
    """
    return f"slipway/{target}/pr" if pull_request else f"slipway/{target}"


def portal_run_url(
    subscription_id: str,
    resource_group: str,
    registry: str,
    run_id: str,
    *,
    tenant: str = "",
    portal: str = PORTAL_URL,
) -> str:
    """The Azure portal link to an ACR run, for a status' target URL.

    The form is the portal's generic resource deep link, ``<portal>/#@<tenant>/resource<ARM id>``,
    here with the run's ARM id (``.../registries/<registry>/runs/<run id>``, the id the
    management API returns for the run). It needs the reader to sign in with access to the
    registry, which is the point: unlike a SAS log link it grants nothing. An empty ``tenant``
    opens the reader's default directory; pass the tenant's domain or id when readers belong
    to several. ``portal`` serves sovereign clouds (``https://portal.azure.us``...).
    """
    parts = [subscription_id, resource_group, registry, run_id]
    if not all(parts):
        raise ValueError("subscription id, resource group, registry and run id are all required")
    sub, rg, reg, run = (quote(p, safe="") for p in parts)
    resource_id = (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry"
        f"/registries/{reg}/runs/{run}"
    )
    return f"{portal.rstrip('/')}/#@{quote(tenant, safe='.-')}/resource{resource_id}"


class StatusPostError(ServiceError):
    """A status could not be posted; ``retryable`` says whether trying again may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class StatusClient(Protocol):
    """Posts statuses to one Git host; ``provider`` names it in logs."""

    provider: str

    def post(self, status: CommitStatus) -> None: ...


def _is_shareable_link(url: str) -> bool:
    """A plain http(s) link without credentials: a status is public to every reader of the repository."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    query_names = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return "sig" not in query_names  # an Azure Storage SAS: a credential, not a link


def truncate(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, ending in an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# -- repository URLs ---------------------------------------------------------------------------


def require_location(repo_url: str, *, min_segments: int) -> RepoLocation:
    """The parsed repository URL, or a non-retryable ``StatusPostError`` when it has no such path."""
    loc = parse_repo_url(repo_url)
    if loc is None or len(loc.segments) < min_segments:
        raise StatusPostError("the repository URL has no owner/repository path", retryable=False)
    return loc
