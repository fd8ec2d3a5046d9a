"""Bitbucket Cloud commit statuses (bitbucket.org); Bitbucket Data Center has another API: not supported.

Token: ``BITBUCKET_STATUS_TOKEN``, a repository access token; the commit-status endpoints accept
the ``repository`` scope, i.e. "Repositories: Read" is enough (Atlassian: creating statuses needs
only read; only the status' author or an admin may overwrite it, so the pending and the final
status must come from the same token). With ``BITBUCKET_STATUS_USER`` set, the token is sent as
Basic auth (user + app password or API token with the same read scope) instead of Bearer.
``BITBUCKET_API_URL`` overrides the API (default ``https://api.bitbucket.org``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import quote

from shared.runs.commit_status.model import (
    CommitState,
    CommitStatus,
    StatusNotPostable,
    require_location,
    truncate,
)
from shared.runs.commit_status.transport import DEFAULT_TIMEOUT_S, Transport


class BitbucketStatusClient:
    """``POST /2.0/repositories/{workspace}/{slug}/commit/{sha}/statuses/build``.

    Bitbucket refuses a ``key`` over 40 characters, so a longer context is shortened to a
    stable 40-character key (the pending and the final status must share it); ``url`` is
    required, so the repository page stands in when there is no run link. "If the specified key
    already exists, the existing status object will be overwritten" (Commit statuses, Create a
    build status for a commit, developer.atlassian.com/cloud/bitbucket/rest/api-group-commit-
    statuses/): a commit's statuses are keyed by ``key``.

    A pull request's status needs ``refname``: "To associate a commit status to a pull request,
    the refname field must be set to the source branch of the pull request" (the same page). A
    commit status belongs to the repository holding the commit, and a fork's head commit is
    the fork's: the configured repository answers 404 for it (appveyor/ci#2714, where only the
    head repository accepted it), and Jenkins' Bitbucket Branch Source posts a request's status
    to the head's repository (``BitbucketSCMSource.buildBitbucketClient(PullRequestSCMHead)``).
    Slipway's token is the configured repository's and has no rights on a contributor's fork,
    so a fork's request gets no status (``refuses``).
    """

    provider = "bitbucket"
    KEY_LIMIT = 40
    TEXT_LIMIT = 255
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "INPROGRESS",
        CommitState.SUCCESS: "SUCCESSFUL",
        CommitState.FAILURE: "FAILED",
        CommitState.ERROR: "FAILED",  # STOPPED reads as "cancelled" and would not block a merge
    }

    def __init__(
        self,
        token: str,
        *,
        user: str | None = None,
        api_url: str = "https://api.bitbucket.org",
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        self.api_url = api_url.rstrip("/")
        if user:
            basic = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
            self._authorization = f"Basic {basic}"
            secrets: tuple[str, ...] = (token, basic)
        else:
            self._authorization = f"Bearer {token}"
            secrets = (token,)
        self._http = Transport(secrets, timeout)

    def __repr__(self) -> str:
        return f"BitbucketStatusClient(api_url={self.api_url!r})"

    @classmethod
    def key_for(cls, context: str) -> str:
        if len(context) <= cls.KEY_LIMIT:
            return context
        digest = hashlib.sha256(context.encode("utf-8")).hexdigest()[:12]
        return f"{context[: cls.KEY_LIMIT - 13]}-{digest}"

    @staticmethod
    def refuses(status: CommitStatus) -> str | None:
        """Why this host has nowhere for ``status`` that Slipway's token may write, or None."""
        if status.pull_request is not None and status.pull_request.fork:
            return (
                "a fork's pull request shows the statuses of the fork's own commit, in the fork: "
                "the configured repository's token cannot post there"
            )
        return None

    def post(self, status: CommitStatus) -> None:
        if (reason := self.refuses(status)) is not None:
            raise StatusNotPostable(reason)
        loc = require_location(status.repo_url, min_segments=2)
        workspace, slug = loc.segments[:2]
        body = {
            "key": self.key_for(status.context),
            "state": self.STATES[status.state],
            "name": status.context[: self.TEXT_LIMIT],
            "url": status.target_url or f"https://bitbucket.org/{workspace}/{slug}",
            "description": truncate(status.description, self.TEXT_LIMIT),
        }
        if status.pull_request is not None:
            body["refname"] = status.pull_request.head_branch
        self._http.post_json(
            f"{self.api_url}/2.0/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}"
            f"/commit/{status.commit}/statuses/build",
            {"Authorization": self._authorization},
            body,
        )
