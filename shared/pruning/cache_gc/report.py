"""What a collection did: the ``--json`` output of ``slipway prune cache`` and the timer's log line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NameReport(BaseModel):
    """One cache name (one manifest)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size_bytes: int = Field(description="Sum of the annotated sizes of the blobs its manifest references.")
    blobs: int = Field(description="Blobs its manifest references.")
    last_export: datetime = Field(
        description="Last-modified time of the manifest: BuildKit rewrites it on every export."
    )
    expired: bool
    reason: str = Field(description="keep_names, recent, max_age, max_bytes, rewritten or delete_failed.")


class CacheReport(BaseModel):
    """Counts of one run. With ``dry_run`` the deletions are the ones that would have happened."""

    model_config = ConfigDict(extra="forbid")

    container: str
    prefix: str
    dry_run: bool
    started_at: datetime
    duration_seconds: float = 0.0
    grace: str
    max_age: str | None
    max_bytes: int | None
    manifests_kept: int = 0
    manifests_expired: int = 0
    blobs_listed: int = 0
    blobs_live: int = 0
    blobs_deleted: int = 0
    blobs_kept_grace: int = 0
    blobs_candidates: int = Field(
        default=0,
        description="Unreferenced blobs past grace, recorded for a later run to delete (two-phase).",
    )
    bytes_freed: int = 0
    delete_failures: int = Field(default=0, description="Deletes refused for another reason than 404/412.")
    manifest_listings: int = Field(
        default=0, description="Listings of the manifests: the first read, and the re-checks before deletes."
    )
    manifests_reread: int = Field(
        default=0, description="Manifests downloaded again: new or changed since first read."
    )
    resumed_after: str | None = Field(
        default=None, description="The sweep started after this digest, where a bounded run stopped."
    )
    stopped_after: str | None = Field(
        default=None, description="The run reached max_deletes/max_seconds here; the next resumes after it."
    )
    listing_pages: int = Field(default=0, description="Blob listing pages requested by the sweep.")
    resume_token_refused: bool = Field(
        default=False,
        description="The service refused the stored listing token: the sweep listed from the start.",
    )
    state_conflict: bool = Field(
        default=False,
        description="Another run replaced the candidates document meanwhile: this run's was not written.",
    )
    complete: bool = Field(default=False, description="False when the sweep was stopped (see error).")
    error: str | None = None
    names: list[NameReport] = Field(default_factory=list)

    def summary(self, *, max_names: int = 50) -> dict[str, Any]:
        """The report without the per-name table (a log line), plus the first expired names."""
        data = self.model_dump(mode="json", exclude={"names"})
        expired = [n.name for n in self.names if n.expired]
        data["expired_names"] = expired[:max_names]
        data["expired_names_truncated"] = len(expired) > max_names
        return data
