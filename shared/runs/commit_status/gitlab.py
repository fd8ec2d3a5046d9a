"""GitLab commit statuses (gitlab.com and self-managed).

Token: ``GITLAB_STATUS_TOKEN``, a project (or group) access token with the Developer role.
GitLab has no narrower scope than ``api`` that allows ``POST /projects/:id/statuses/:sha``
(``write_repository`` is Git-over-HTTP only), so the token must have ``api``: keep it to one
project and the Developer role to bound it. ``GITLAB_API_URL`` overrides the API (default
``https://<host>/api/v4``).
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


class GitLabStatusClient:
    """``POST /projects/{url-encoded path}/statuses/{sha}``.

    GitLab documents 255 characters for ``description`` and ``target_url``; a longer link is
    left out rather than failing the whole status.

    A merge request's status needs its ``ref`` ("The ref (branch or tag) to which the status
    refers", docs.gitlab.com/api/commits/#set-commit-pipeline-status). Without one GitLab takes
    the ref of the newest pipeline of the commit, else the first branch containing it, else
    answers 404 "References for commit" (``Ci::CreateCommitStatusService#ref``,
    app/services/ci/create_commit_status_service.rb); the status joins the newest pipeline of
    that commit and ref, or a new ``external`` one. A merge request shows the merge-request
    pipelines of its own ``iid`` and the source project's pipelines of its source branch at its
    commits (``Ci::PipelinesForMergeRequestFinder#all``, app/finders/ci/
    pipelines_for_merge_request_finder.rb). So:

    * same project: ``ref`` is the source branch; the status lands in (or creates) a pipeline of
      that branch, which the merge request shows;
    * from a fork: the configured (target) project holds the head commit only under
      ``refs/merge-requests/<iid>/head``, no branch contains it (no ``ref``: 404). That ref is
      sent: the status joins the merge-request pipeline the target project runs for the head
      ("Run pipelines in the parent project"), which the merge request shows; without one it
      makes an external pipeline of the target project, which the merge request does not show.
      The source project's pipelines (what it shows otherwise) are the fork's: Slipway's token
      has, and should have, no rights there.
    """

    provider = "gitlab"
    DESCRIPTION_LIMIT = 255
    URL_LIMIT = 255
    STATES: ClassVar[Mapping[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failed",
        CommitState.ERROR: "failed",  # GitLab has no "error"; "canceled" would hide the failure
    }

    def __init__(
        self, token: str, *, api_url: str = "https://gitlab.com/api/v4", timeout: float = DEFAULT_TIMEOUT_S
    ):
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._http = Transport((token,), timeout)
        # A GitLab under a relative URL (https://host/gitlab/api/v4) has that prefix in repo paths.
        api = urlsplit(self.api_url)
        self._api_host = (api.hostname or "").lower()
        self._prefix = tuple(s for s in api.path.removesuffix("/api/v4").split("/") if s)

    def __repr__(self) -> str:
        return f"GitLabStatusClient(api_url={self.api_url!r})"

    def project_path(self, repo_url: str) -> str:
        loc = require_location(repo_url, min_segments=2)
        segments = loc.segments
        n = len(self._prefix)
        if n and loc.host == self._api_host and segments[:n] == self._prefix and len(segments) > n + 1:
            segments = segments[n:]
        return "/".join(segments)

    def post(self, status: CommitStatus) -> None:
        project = quote(self.project_path(status.repo_url), safe="")
        body: dict[str, Any] = {
            "state": self.STATES[status.state],
            "name": status.context,
            "description": truncate(status.description, self.DESCRIPTION_LIMIT),
        }
        if status.target_url and len(status.target_url) <= self.URL_LIMIT:
            body["target_url"] = status.target_url
        if (pr := status.pull_request) is not None:
            body["ref"] = f"refs/merge-requests/{pr.number}/head" if pr.fork else pr.head_branch
        try:
            self._http.post_json(
                f"{self.api_url}/projects/{project}/statuses/{status.commit}",
                {"PRIVATE-TOKEN": self._token},
                body,
            )
        except StatusPostError as exc:
            # Re-posting the state a status already has (a retry whose first answer was lost)
            # is refused with 400 "Cannot transition status via :x from :x": it is posted.
            if exc.status == 400 and "Cannot transition status" in str(exc):
                return
            raise
