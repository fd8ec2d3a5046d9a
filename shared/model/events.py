"""The provider-neutral events every receiver normalises into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

ZERO_COMMIT = "0" * 40


@dataclass(frozen=True, slots=True)
class PushEvent:
    """A Git push, whichever host sent it.

    ``changed_files`` is None when the sender does not list them completely (GitHub lists at
    most 20 commits; a new branch lists only some): path filters then cannot be applied.
    """

    provider: str
    delivery_id: str | None
    received_at: datetime
    repo_urls: tuple[str, ...]
    clone_url: str
    ref: str
    after: str
    before: str | None = None
    created: bool = False
    deleted: bool = False
    forced: bool = False
    default_branch: str | None = None
    head_message: str | None = None
    changed_files: frozenset[str] | None = None
    incomplete_reason: str | None = field(default=None)

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None


@dataclass(frozen=True)
class ImagePushedEvent:
    """An image pushed to a registry, whichever sender reported it (ACR, Event Grid, Docker Hub).

    ``registry`` and ``repository`` are normalised as Docker normalises references
    (``docker.io/library/python``). ``digest`` is set only when the sender is trusted to report
    it and it is well-formed; Docker Hub's unsigned payload never sets it. ``pushed_at`` is the
    sender's own time of the push: when no digest is known, it tells one update of a tag from the
    next, so that a retried delivery of the same update is recognised.
    """

    provider: str
    delivery_id: str | None
    received_at: datetime
    registry: str
    repository: str
    tag: str | None
    digest: str | None = None
    pushed_at: datetime | None = None

    @property
    def image(self) -> str:
        """``registry/repository[:tag]``, for messages and request ids."""
        return f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")

    @property
    def update_key(self) -> str | None:
        """What identifies this update of the image across redeliveries; None when nothing does."""
        if self.digest:
            return self.digest
        if self.pushed_at is not None:
            return f"pushed-at:{self.pushed_at.isoformat()}"
        if self.delivery_id:
            return f"event:{self.delivery_id}"
        return None


# The actions a pull/merge request event is normalised to, whichever host sent it. "updated"
# means the head moved (a new push): it is what removes a maintainer's trust label's effect.
PullRequestAction = Literal["opened", "updated", "closed", "labeled", "unlabeled", "reopened"]
PULL_REQUEST_ACTIONS: tuple[PullRequestAction, ...] = get_args(PullRequestAction)


@dataclass(frozen=True, slots=True)
class PullRequestEvent:
    """A pull request (GitHub, Gitea, Bitbucket, Azure DevOps) or merge request (GitLab) event.

    ``repo_urls`` name the base (target) repository, the one a target's ``repo`` matches;
    ``head_repo_urls`` name the repository the head branch lives in. ``head_ref`` and ``base_ref``
    are full refs (``refs/heads/<branch>``), whatever form the host sends. ``fork`` is True when the
    two differ: the head's code is then not the base repository's own. ``head_commit`` is a full
    commit id, or None when the host sends only an abbreviation (Bitbucket Cloud sends 12 hex
    digits), kept in ``head_commit_abbrev``. ``labels`` are the labels on the request after the
    event; ``labels_added`` those this event added, ``labels_removed`` those it removed, or None
    when the host does not say (Gitea's ``label_updated`` carries only the new set, its
    ``label_cleared`` removes them all). ``updated_at`` is the host's time of the request's last
    change, from the payload (None when it has none): a label change moves it and a redelivery
    keeps it, so it orders a label added against a label removed
    (``shared.runs.pull_request_state``).
    """

    provider: str
    delivery_id: str | None
    received_at: datetime
    repo_urls: tuple[str, ...]
    number: int
    action: PullRequestAction
    head_commit: str | None
    head_ref: str
    head_repo_urls: tuple[str, ...]
    base_ref: str
    fork: bool
    labels: frozenset[str] = frozenset()
    labels_added: frozenset[str] | None = frozenset()
    labels_removed: frozenset[str] | None = frozenset()
    merged: bool = False
    head_commit_abbrev: str | None = None
    sender_action: str = ""
    updated_at: datetime | None = None

    @property
    def head_branch(self) -> str:
        return self.head_ref.removeprefix("refs/heads/")

    @property
    def base_branch(self) -> str:
        return self.base_ref.removeprefix("refs/heads/")
