"""The collector's decisions, pure: manifests and a streamed blob listing in, decisions out.

No storage here, so the same code is exercised by the property tests and by the 1M-blob
benchmark. Memory is the manifests plus the live set (one interned string per referenced
digest); blobs are classified one at a time and never collected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from shared.model.cache_names import parse_pr_cache_name
from shared.model.globs import any_match
from shared.pruning.cache_gc.layout import BlobEntry, CacheLayout, Manifest


@dataclass(frozen=True)
class Policy:
    """What to keep. ``max_age``/``max_bytes`` None: no expiry by age/by budget."""

    grace: timedelta
    max_age: timedelta | None = None
    keep_names: Sequence[str] = ()
    max_bytes: int | None = None
    # How long a blob must have been a candidate (unreferenced, past grace, recorded by an earlier
    # run) before a run deletes it: an export in flight when it was first recorded has landed.
    settle: timedelta = timedelta(0)
    # (target, number) -> whether that pull request was closed: its cache ``<target>-pr-<number>``
    # then expires (issue #20). None: pull-request caches expire by age and budget only.
    pull_request_closed: Callable[[str, int], bool] | None = None


class Reason(StrEnum):
    """Why a cache name was kept or expired (in the report)."""

    KEEP_NAMES = "keep_names"  # matches keep_names: never expired
    RECENT = "recent"  # exported within max_age (and within the budget)
    MAX_AGE = "max_age"  # not exported for longer than max_age
    PR_CLOSED = "pr_closed"  # the cache of a pull request that was closed
    MAX_BYTES = "max_bytes"  # over the budget; older exports go first
    REWRITTEN = "rewritten"  # exported again while the collector ran: kept, re-read
    DELETE_FAILED = "delete_failed"  # expired, but the delete was refused: still there, so kept


class BlobDecision(Enum):
    LIVE = "live"  # referenced by a remaining manifest
    GRACE = "grace"  # unreferenced but younger than the grace period
    DELETE = "delete"  # unreferenced and old enough
    FOREIGN = "foreign"  # not a blob of this cache layout: never touched


@dataclass
class PageDecisions:
    """One listing page classified: counts, and the blobs to delete (at most one page of them)."""

    live: int
    grace: int
    foreign: int
    doomed: list[BlobEntry]


@dataclass
class NameDecision:
    manifest: Manifest
    expired: bool
    reason: Reason


class MarkSweepPlanner:
    """Expires manifests by the policy, marks the live set, then classifies blobs one by one."""

    def __init__(
        self, layout: CacheLayout, policy: Policy, now: datetime, manifests: Iterable[Manifest]
    ) -> None:
        self.layout = layout
        self.policy = policy
        self.now = now
        self.cutoff = now - policy.grace  # blobs modified after this are in their grace period
        self.names: dict[str, NameDecision] = {}
        self.live: set[str] = set()
        self._expire(list(manifests))

    def _expire(self, manifests: list[Manifest]) -> None:
        policy = self.policy
        candidates: list[Manifest] = []
        for manifest in manifests:
            if any_match(policy.keep_names, manifest.name):
                self.keep(manifest, Reason.KEEP_NAMES)
            elif policy.max_age is not None and self.now - manifest.last_modified > policy.max_age:
                self.names[manifest.name] = NameDecision(manifest, True, Reason.MAX_AGE)
            elif self._closed_pull_request(manifest.name):
                self.names[manifest.name] = NameDecision(manifest, True, Reason.PR_CLOSED)
            else:
                candidates.append(manifest)
        # Most recently exported first; once one name does not fit the budget, it and every
        # older name expire (a small old name never outlives a bigger recent one).
        candidates.sort(key=lambda m: (m.last_modified, m.name), reverse=True)
        budget = policy.max_bytes
        used = self.live_bytes()
        over = False
        for manifest in candidates:
            if budget is not None and not over:
                extra = sum(size for digest, size in manifest.blobs.items() if digest not in self.live)
                over = used + extra > budget
                used += 0 if over else extra
            if over:
                self.names[manifest.name] = NameDecision(manifest, True, Reason.MAX_BYTES)
            else:
                self.keep(manifest, Reason.RECENT)

    def _closed_pull_request(self, name: str) -> bool:
        closed = self.policy.pull_request_closed
        if closed is None:
            return False
        parsed = parse_pr_cache_name(name)
        return parsed is not None and closed(*parsed)

    def keep(self, manifest: Manifest, reason: Reason) -> None:
        """Keep a manifest (also after all: rewritten during the run, or its delete refused); its
        blobs join the live set, and blobs already live stay live."""
        self.names[manifest.name] = NameDecision(manifest, False, reason)
        self.live.update(manifest.blobs)

    def live_bytes(self) -> int:
        """Annotated bytes of the live set (each shared blob once)."""
        sizes: dict[str, int] = {}
        for decision in self.names.values():
            if not decision.expired:
                sizes.update(decision.manifest.blobs)
        return sum(sizes.values())

    @property
    def expired(self) -> list[Manifest]:
        return [d.manifest for d in self.names.values() if d.expired]

    def classify(self, blob: BlobEntry) -> BlobDecision:
        """The fate of one listed blob (the sweep uses ``classify_page``, the same rules per page)."""
        prefix = self.layout.blobs_prefix
        name = blob.name
        if not name.startswith(prefix):
            return BlobDecision.FOREIGN
        if name[len(prefix) :] in self.live:
            return BlobDecision.LIVE
        if blob.last_modified > self.cutoff:
            return BlobDecision.GRACE
        return BlobDecision.DELETE

    def classify_page(self, page: Iterable[BlobEntry]) -> PageDecisions:
        """``classify`` over a listing page in one loop (the sweep's hot path: no call per blob)."""
        live_set = self.live
        prefix = self.layout.blobs_prefix
        start = len(prefix)
        cutoff = self.cutoff
        live = grace = foreign = 0
        doomed: list[BlobEntry] = []
        for blob in page:
            name = blob.name
            if not name.startswith(prefix):
                foreign += 1
            elif name[start:] in live_set:
                live += 1
            elif blob.last_modified > cutoff:
                grace += 1
            else:
                doomed.append(blob)
        return PageDecisions(live, grace, foreign, doomed)

    def still_unreferenced(self, blob: BlobEntry) -> bool:
        """Re-check before deleting, after the live set may have grown."""
        return blob.name[len(self.layout.blobs_prefix) :] not in self.live
