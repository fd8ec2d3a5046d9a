"""The provider-neutral events every receiver normalises into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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
