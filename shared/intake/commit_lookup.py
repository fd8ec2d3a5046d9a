"""The full head commit of a Bitbucket Cloud pull request, whose webhook names it in 12 hex digits.

Bitbucket's ``pullrequest:*`` payloads carry ``pullrequest.source.commit.hash`` abbreviated (12 hex
digits in every published sample, tests/fixtures/bitbucket). A build needs the full id: BuildKit
fetches that exact commit, and the request's grammar accepts nothing else. Bitbucket's Commits API
resolves an abbreviation: ``GET /2.0/repositories/{workspace}/{repo_slug}/commit/{commit}`` returns
the commit with its full ``hash`` (Atlassian, Bitbucket Cloud REST API, Commits, "Get a commit":
its example asks for ``.../commit/f7591a1`` and answers ``"hash": "f7591a13eda4..."``; scopes
``repository``, ``read:repository:bitbucket``).

It is asked with the token the commit statuses use (``BITBUCKET_STATUS_TOKEN``, a repository access
token with read access; ``BITBUCKET_STATUS_USER`` makes it Basic auth; ``BITBUCKET_API_URL``, https
or loopback only), about the target's configured repository (never a URL of the payload), with a
short timeout: the webhook waits for it. The answer must be a full commit id that starts with the
abbreviation.

Not resolved, so not built (the answer's ``ignored`` says why): no token is set; a fork's request
(its head lives in the fork, which neither the base repository's token nor the build, cloning the
base repository, can read); Bitbucket answers 404, 401 or 403. An unreachable API, a 5xx or a 429
answers the webhook 503, so Bitbucket delivers it again.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from urllib.parse import quote

from shared.intake.pr_routing import NotBuildable
from shared.model.build_request import COMMIT_RE
from shared.model.config import Target
from shared.model.events import PullRequestEvent
from shared.model.repo_urls import parse_repo_url
from shared.platform.http import RequestRejected
from shared.platform.http.client import ConnectionFailed, HttpClient
from shared.runs.commit_status.transport import api_base

TOKEN_SETTING = "BITBUCKET_STATUS_TOKEN"
USER_SETTING = "BITBUCKET_STATUS_USER"
API_SETTING = "BITBUCKET_API_URL"
DEFAULT_API = "https://api.bitbucket.org"
TIMEOUT_S = 5.0
MAX_ANSWER = 256 * 1024
ABBREVIATED = re.compile(r"[0-9a-f]{7,64}")


def _setting(settings: Mapping[str, str], name: str) -> str | None:
    value = (settings.get(name) or "").strip()
    return value or None


def _authorization(token: str, user: str | None) -> str:
    if user is None:
        return f"Bearer {token}"
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode("ascii")


def resolve_bitbucket_head(
    event: PullRequestEvent, target: Target, settings: Mapping[str, str], *, http: HttpClient | None = None
) -> str:
    """The full head commit of ``event`` in ``target``'s repository; raises ``NotBuildable`` (not
    built, with the reason) or ``RequestRejected`` 503 (ask again later)."""
    abbrev = event.head_commit_abbrev or ""
    unresolved = f"the host sent an abbreviated head commit ({abbrev})"
    if event.fork:
        raise NotBuildable(f"{unresolved} of a fork, which the base repository's token cannot resolve")
    token = _setting(settings, TOKEN_SETTING)
    if token is None:
        raise NotBuildable(f"{unresolved}; set {TOKEN_SETTING} (read access to the repository) to resolve it")
    base = api_base(_setting(settings, API_SETTING) or DEFAULT_API)
    location = parse_repo_url(target.repo)
    if base is None or location is None or len(location.segments) < 2 or not ABBREVIATED.fullmatch(abbrev):
        raise NotBuildable(f"{unresolved}; {API_SETTING} or the target's repo cannot be used to resolve it")
    workspace, slug = location.segments[:2]
    url = f"{base}/2.0/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}/commit/{abbrev}"
    headers = {
        "Authorization": _authorization(token, _setting(settings, USER_SETTING)),
        "Accept": "application/json",
    }
    client = http or HttpClient(timeout=TIMEOUT_S)
    try:
        answer = client.request("GET", url, headers=headers, max_body=MAX_ANSWER)
    except ConnectionFailed as exc:
        raise _retry_later(f"cannot be reached ({exc.reason})") from None
    if answer.status == 429 or answer.status >= 500:
        raise _retry_later(f"answered {answer.status}")
    if answer.status == 404:
        raise NotBuildable(f"{unresolved}; Bitbucket knows no such commit in {workspace}/{slug}")
    if answer.status != 200:
        raise NotBuildable(
            f"{unresolved}; Bitbucket answered {answer.status}: check {TOKEN_SETTING}'s read access"
        )
    try:
        full = json.loads(answer.body).get("hash")
    except (ValueError, AttributeError):
        full = None
    if not isinstance(full, str) or not COMMIT_RE.match(full) or not full.startswith(abbrev):
        raise NotBuildable(f"{unresolved}; Bitbucket's answer does not name its full commit")
    return full


def _retry_later(what: str) -> RequestRejected:
    return RequestRejected(
        503, "commit_lookup_failed", f"Bitbucket's API {what} resolving the head commit; retry later"
    )
