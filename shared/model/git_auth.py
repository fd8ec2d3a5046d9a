"""How a target's Git token reaches BuildKit, per Git host.

BuildKit's Git source (moby/buildkit ``source/git/source.go``, ``authSecretNames`` and
``getAuthToken``; host-scoped names since v0.8.0, commit 49de675) looks for these build secrets,
in order, and uses the first one present:

1. ``GIT_AUTH_HEADER.<host>``  2. ``GIT_AUTH_TOKEN.<host>``  3. ``GIT_AUTH_HEADER``  4. ``GIT_AUTH_TOKEN``

where ``<host>`` is the remote URL's host (with its port, Go's ``url.URL.Host``). A *token* secret
becomes ``basic base64("x-access-token:" + token)``; a *header* secret is used as it is. Either is
passed to git as ``http.<remote>.extraheader=Authorization: <value>``.

What each host accepts with a token over HTTPS Basic authentication:

* GitHub documents ``x-access-token`` as the user name for installation tokens
  (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/authenticating-as-a-github-app-installation).
* GitLab: "any non-blank value as a username"
  (https://docs.gitlab.com/user/profile/personal_access_tokens/).
* Azure DevOps: "a username, which can be anything except the empty string"
  (MicrosoftDocs/azure-devops-docs ``docs/repos/git/includes/personal-access-tokens.md``).
* Gitea takes a non-empty password as the token, whatever the user name
  (go-gitea/gitea ``services/auth/basic.go``, ``Basic.Verify``).
* Bitbucket Cloud: repository, project and workspace access tokens need the literal user name
  ``x-token-auth`` (https://support.atlassian.com/bitbucket-cloud/docs/using-access-tokens/);
  API tokens take the account's Bitbucket user name or ``x-bitbucket-api-token-auth``
  (https://support.atlassian.com/bitbucket-cloud/docs/using-api-tokens/). BuildKit's
  ``x-access-token`` is refused.

So every host takes BuildKit's own token form except Bitbucket Cloud, which gets a header secret
built from its user name; ``Target.git_token_user`` overrides the user name for any host. The
secrets are always host-scoped: the token is offered only to the repository's own host, never to
another remote a Dockerfile fetches (``ADD https://other.example/x.git``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# The user name BuildKit puts before a GIT_AUTH_TOKEN secret (source/git/source.go).
BUILDKIT_TOKEN_USER = "x-access-token"
# Hosts (lowercase) whose tokens need another user name than BuildKit's.
HOST_TOKEN_USERS = {"bitbucket.org": "x-token-auth"}
TOKEN_SECRET = "GIT_AUTH_TOKEN"
HEADER_SECRET = "GIT_AUTH_HEADER"
# A Basic user name: no ':' (it ends the user name), nothing the shell or buildx's lists act on.
GIT_TOKEN_USER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,256}$")


@dataclass(frozen=True)
class GitAuth:
    """The build secret that carries the token to BuildKit for one repository."""

    secret_id: str  # GIT_AUTH_TOKEN.<host> or GIT_AUTH_HEADER.<host>
    user: str | None  # None: BuildKit builds the header itself (x-access-token)

    @property
    def env(self) -> str:
        """The build step's variable holding the secret (``--secret id=...,env=<this>``)."""
        return self.secret_id.split(".", 1)[0]


def git_auth(repo_url: str, user: str | None = None) -> GitAuth:
    """How to send a token for ``repo_url`` (https, no credentials): ``user`` overrides the host's."""
    parts = urlsplit(repo_url)
    host = parts.netloc  # as BuildKit's url.Parse(remote).Host: host[:port], case kept
    chosen = user or HOST_TOKEN_USERS.get((parts.hostname or "").lower(), BUILDKIT_TOKEN_USER)
    if chosen == BUILDKIT_TOKEN_USER:
        return GitAuth(f"{TOKEN_SECRET}.{host}", None)
    return GitAuth(f"{HEADER_SECRET}.{host}", chosen)
