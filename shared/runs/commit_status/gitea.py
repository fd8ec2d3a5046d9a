"""Gitea / Forgejo commit statuses (the same API).

Token: ``GITEA_STATUS_TOKEN`` with the ``write:repository`` scope (Gitea has no status-only
scope; use a bot user with Write access to the built repositories only) and ``GITEA_BASE_URL``
(e.g. ``https://gitea.example.com``). The token is only ever sent to that URL's host: a
repository elsewhere gets no status, whatever its webhook claimed to be.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from shared.runs.commit_status.model import (
    CommitState,
    CommitStatus,
    StatusPostError,
    require_location,
    truncate,
)
from shared.runs.commit_status.transport import DEFAULT_TIMEOUT_S, Transport


class GiteaStatusClient:
    """``POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}`` (Forgejo: the same API).

    A pull request's status is posted the same way, on the configured (base) repository for the
    head commit, fork or not: Gitea reads a request's statuses from its base repository for its
    head commit (``GetPullRequestCommitStatusState`` in services/pull/commit_status.go:
    ``GetLatestCommitStatus(ctx, pr.BaseRepo.ID, sha, ...)``, the latest status per context), and
    the base repository holds the head under ``refs/pull/<n>/head``.
    """

    provider = "gitea"
    DESCRIPTION_LIMIT = 255  # no documented limit; one readable line
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failure",
        CommitState.ERROR: "error",
    }

    def __init__(self, token: str, *, base_url: str, timeout: float = DEFAULT_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = Transport((token,), timeout)
        base = urlsplit(self.base_url)
        self._prefix = tuple(s for s in base.path.split("/") if s)

    def __repr__(self) -> str:
        return f"GiteaStatusClient(base_url={self.base_url!r})"

    def post(self, status: CommitStatus) -> None:
        loc = require_location(status.repo_url, min_segments=2)
        segments = loc.segments
        n = len(self._prefix)
        if n and segments[:n] == self._prefix:  # Gitea served under a sub-path
            segments = segments[n:]
        if len(segments) != 2:
            raise StatusPostError("the repository URL is not <base>/<owner>/<repo>", retryable=False)
        owner, repo = (quote(s, safe="") for s in segments)
        body: dict[str, Any] = {
            "state": self.STATES[status.state],
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
            "context": status.context,
        }
        if status.target_url:
            body["target_url"] = status.target_url
        self._http.post_json(
            f"{self.base_url}/api/v1/repos/{owner}/{repo}/statuses/{status.commit}",
            {"Authorization": f"token {self._token}"},
            body,
        )
