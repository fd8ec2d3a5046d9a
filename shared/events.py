"""The provider-neutral events every receiver normalises into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

ZERO_COMMIT = "0" * 40


@dataclass(frozen=True)
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
