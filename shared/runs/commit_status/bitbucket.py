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

from shared.runs.commit_status.model import CommitState, CommitStatus, require_location, truncate
from shared.runs.commit_status.transport import DEFAULT_TIMEOUT_S, Transport


class BitbucketStatusClient:
    """``POST /2.0/repositories/{workspace}/{slug}/commit/{sha}/statuses/build``.

    Bitbucket refuses a ``key`` over 40 characters, so a longer context is shortened to a
    stable 40-character key (the pending and the final status must share it); ``url`` is
    required, so the repository page stands in when there is no run link.
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

    def post(self, status: CommitStatus) -> None:
        loc = require_location(status.repo_url, min_segments=2)
        workspace, slug = loc.segments[:2]
        self._http.post_json(
            f"{self.api_url}/2.0/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}"
            f"/commit/{status.commit}/statuses/build",
            {"Authorization": self._authorization},
            {
                "key": self.key_for(status.context),
                "state": self.STATES[status.state],
                "name": status.context[: self.TEXT_LIMIT],
                "url": status.target_url or f"https://bitbucket.org/{workspace}/{slug}",
                "description": truncate(status.description, self.TEXT_LIMIT),
            },
        )
