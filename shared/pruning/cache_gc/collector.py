"""``CacheCollector``: expire manifests, mark, sweep, with the re-checks that keep a live cache whole.

The order of one run, and why:

1. List and read every manifest (concurrently). One that cannot be read or parsed stops the run
   before anything is deleted: read as empty, it would free every blob it needs.
2. The planner expires manifests by the policy and marks the live set.
3. Expired manifests are deleted only if their ETag is unchanged; a 412 means an exporter wrote
   the name again, so it is re-read and kept.
4. Before the sweep and again before every batch that deletes something, the manifests are listed
   again (one listing: names and ETags): only a name whose ETag differs from the one read (a new or
   rewritten manifest) is downloaded, its blobs join the live set, and the batch is filtered
   against it. A blob referenced by a manifest that exists when its batch is sent is therefore
   never deleted. A batch with nothing ripe deletes nothing and needs no listing: what it records
   is checked again by the later run that deletes it.
5. Blobs are streamed page by page; each is live, in its grace period (an exporter uploads blobs
   before its manifest), or unreferenced and past grace: a *candidate*.
6. Deletion is two-phase across runs (``candidates``): a candidate is deleted only if an earlier
   run, at least ``policy.settle`` ago, recorded it with the same ETag; the others are recorded for
   a later run. Deletes go in batches of 256, each only if its ETag is unchanged. The candidates
   document is written at the end of a complete run (never by a dry run).
7. A run's work is bounded (``max_deletes``, ``max_seconds``): once a bound is reached the sweep
   stops before its next batch (a run flushes at least one) or at the end of a page (a run lists
   at least one blob), and the document records where (``resume``): the last blob swept, and the
   listing's continuation token of the page that holds it (or of the next page). The next run
   lists from that token, so it lists at most one page it has seen, skips to after that blob, and
   candidates outside the stretch a run swept are carried over unchanged. The bound caps the
   delete batches, the re-check listings and the listed pages of one run.
8. Every blob is visited within a bounded number of runs: each run moves the resume point
   forward (a batch or a page), a run that reaches the end of the listing clears it, and the next
   lap starts at the beginning. A blob created behind the resume point is visited in the next lap.
   A token the service refuses is dropped: that run lists from the start and skips to the resume
   point, as if it had no token. The document is replaced only if no other run replaced it since
   it was read (its ETag); otherwise this run's record is dropped, which only delays deletions.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from shared.model.durations import format_duration
from shared.pruning.cache_gc.candidates import Candidate, CandidateState, parse_state, render_candidates
from shared.pruning.cache_gc.layout import (
    BlobEntry,
    CacheLayout,
    CorruptManifestError,
    Manifest,
    parse_manifest,
)
from shared.pruning.cache_gc.planner import MarkSweepPlanner, Policy, Reason
from shared.pruning.cache_gc.report import CacheReport, NameReport
from shared.pruning.cache_gc.store import (
    MAX_BATCH,
    BlobPage,
    CacheStore,
    DeleteOutcome,
    ListingTokenRefusedError,
)

DEFAULT_WORKERS = 16
# Listings of the manifests before a batch is deleted, while exports keep changing them.
RECHECK_ROUNDS = 5


class Progress(Protocol):
    """Observer of a run (the CLI's progress bar); every method is optional to act on."""

    def manifests(self, read: int, total: int) -> None: ...

    def blobs(self, listed: int, deleted: int) -> None: ...


class _Silent:
    def manifests(self, read: int, total: int) -> None:
        pass

    def blobs(self, listed: int, deleted: int) -> None:
        pass


class CacheCollector:
    """One collection of one cache (container + prefix) by one policy."""

    def __init__(
        self,
        store: CacheStore,
        layout: CacheLayout,
        policy: Policy,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Progress | None = None,
        workers: int = DEFAULT_WORKERS,
        batch_size: int = MAX_BATCH,
        max_deletes: int | None = None,
        max_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
        if max_deletes is not None and max_deletes < 1:
            raise ValueError("max_deletes must be at least 1 (None: no bound)")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError("max_seconds must be positive (None: no bound)")
        self.store = store
        self.layout = layout
        self.policy = policy
        self.dry_run = dry_run
        self.clock = clock
        self.progress: Progress = progress or _Silent()
        self.workers = workers
        self.batch_size = batch_size
        self.max_deletes = max_deletes
        self.max_seconds = max_seconds
        self.monotonic = monotonic
        self._started = 0.0
        self._resume_after: str | None = None  # the digest the previous (bounded) run stopped after
        self._resume_token: str | None = None  # the listing token of the page that holds it
        self._intern: dict[str, str] = {}
        self._known: dict[str, str] = {}  # manifest name -> the ETag accounted for
        self._previous: dict[str, Candidate] = {}  # what earlier runs recorded
        self._recorded: list[tuple[str, Candidate]] = []  # what this run records

    def collect(self) -> CacheReport:
        started = time.monotonic()
        self._started = self.monotonic()
        now = self.clock()
        report = CacheReport(
            container=self.store.container,
            prefix=self.layout.prefix,
            dry_run=self.dry_run,
            started_at=now,
            grace=format_duration(self.policy.grace),
            max_age=None if self.policy.max_age is None else format_duration(self.policy.max_age),
            max_bytes=self.policy.max_bytes,
        )
        planner: MarkSweepPlanner | None = None
        frozen = False
        self._recorded = []
        try:
            state, state_etag = self._read_candidates()
            self._previous, self._resume_after, self._resume_token = state
            if self._resume_after is None:
                self._resume_token = None  # a token only makes sense with the blob it resumes after
            report.resumed_after = self._resume_after
            report.manifest_listings += 1
            manifests = self._read_manifests([e.name for e in self.store.list_manifests()])
            self._known = {m.name: m.etag for m in manifests}
            planner = MarkSweepPlanner(self.layout, self.policy, now, manifests)
            self._expire(planner, report)
            self._recheck(planner, report)  # each deleting batch checks again (and settles) too
            # The manifests, the live set and the candidates live until the end of the run: out of
            # the cyclic collector's sight, each re-check's listing (tens of thousands of XML
            # elements) does not make it walk them again (bench/cache_gc.py's generated store, 5,000
            # manifests, 100k blobs: 0.10-0.14 s a re-check, 0.16 s without). Undone in ``finally``.
            gc.freeze()
            frozen = True
            stopped, token = self._sweep(planner, report)
            report.complete = True
            report.stopped_after = stopped
            report.blobs_candidates = len(self._recorded)
            if not self.dry_run:
                kept = self._recorded + self._carried(stopped)
                document = render_candidates(kept, resume_after=stopped, resume_token=token)
                written = self.store.write_blob(self.layout.candidates_key, document, etag=state_etag)
                report.state_conflict = not written
        except CorruptManifestError as exc:
            report.error = f"{exc}; nothing more was deleted"
        finally:
            if frozen:
                gc.unfreeze()
            report.duration_seconds = round(time.monotonic() - started, 3)
            if planner is not None:
                _fill_names(report, planner)
        return report

    def _read_candidates(self) -> tuple[CandidateState, str | None]:
        """The state, and the document's ETag (None: no document) for the conditional write."""
        found = self.store.read_manifest(self.layout.candidates_key)
        state = parse_state(found[0]) if found is not None else None
        return state or CandidateState({}, None), None if found is None else found[1]

    def _carried(self, stopped: str | None) -> list[tuple[str, Candidate]]:
        """Earlier candidates outside the stretch this run swept (after ``_resume_after`` up to
        ``stopped``): unchanged, for the run that sweeps them."""
        low, high = self._resume_after, stopped
        if low is None and high is None:
            return []
        return [
            (digest, seen)
            for digest, seen in self._previous.items()
            if (low is not None and digest <= low) or (high is not None and digest > high)
        ]

    # --- manifests ----------------------------------------------------------------------------

    def _read_manifests(self, listed: Sequence[str], *, show: bool = True) -> list[Manifest]:
        total = len(listed)
        progress = self.progress if show else _Silent()
        progress.manifests(0, total)
        manifests: list[Manifest] = []
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, total))) as pool:
            for index, manifest in enumerate(pool.map(self._read_one, listed), 1):
                if manifest is not None:  # deleted since the listing: nothing to keep alive
                    manifests.append(manifest)
                progress.manifests(index, total)
        return manifests

    def _read_one(self, key: str) -> Manifest | None:
        name = self.layout.manifest_name(key)
        try:
            found = self.store.read_manifest(key)
        except CorruptManifestError:
            raise
        except Exception as exc:
            raise CorruptManifestError(name, f"cannot be read ({exc})") from exc
        if found is None:
            return None
        data, etag, last_modified = found
        return parse_manifest(name, data, etag=etag, last_modified=last_modified, intern=self._intern)

    def _expire(self, planner: MarkSweepPlanner, report: CacheReport) -> None:
        if self.dry_run:
            return
        expired, key = planner.expired, self.layout.manifest_key
        for start in range(0, len(expired), self.batch_size):
            batch = expired[start : start + self.batch_size]
            entries = [BlobEntry(key(m.name), m.size, m.last_modified, m.etag) for m in batch]
            for manifest, outcome in zip(batch, self.store.delete(entries), strict=True):
                if outcome is DeleteOutcome.FAILED:
                    # Still there, unchanged: its blobs stay live.
                    planner.keep(manifest, Reason.DELETE_FAILED)
                    report.delete_failures += 1
                elif outcome is DeleteOutcome.CHANGED:
                    self._known.pop(manifest.name, None)  # the re-check reads the new version
        # A deleted name that an exporter writes again is new to _known's ETag: re-read then.

    def _recheck(self, planner: MarkSweepPlanner, report: CacheReport) -> bool:
        """Read every manifest that is new or changed since it was read; its blobs become live.

        Repeats until a listing shows nothing new, so an export that lands while the changed
        manifests are being read is seen too. True when the listing settled; False when exports
        kept coming (``RECHECK_ROUNDS`` listings), and then nothing should be deleted now.
        """
        known = self._known
        name_of = self.layout.manifest_name
        for _ in range(RECHECK_ROUNDS):
            report.manifest_listings += 1
            listed = self.store.manifest_etags()
            changed = [key for key, etag in listed.items() if known.get(name_of(key)) != etag]
            if not changed:
                return True
            report.manifests_reread += len(changed)
            for manifest in self._read_manifests(changed, show=False):
                self._known[manifest.name] = manifest.etag
                planner.keep(manifest, Reason.REWRITTEN)
        return False

    # --- blobs --------------------------------------------------------------------------------

    def _sweep(self, planner: MarkSweepPlanner, report: CacheReport) -> tuple[str | None, str | None]:
        """Classify and flush page by page. At a bound: the digest it stopped after and the token of
        the page that holds it (or of the next page); at the end of the listing: (None, None)."""
        start = len(self.layout.blobs_prefix)
        skip_to = None if self._resume_after is None else self.layout.blob_key(self._resume_after)
        pending: list[BlobEntry] = []
        swept: str | None = None  # the last digest of the last batch flushed (each run flushes one)
        swept_token: str | None = None  # the token of the page that batch ended in
        for listed in self._pages(report):
            page: Sequence[BlobEntry] = listed.blobs
            if skip_to is not None:  # resuming: the listing is in name order, up to skip_to was swept
                if not page or page[-1].name <= skip_to:
                    continue
                page = [b for b in page if b.name > skip_to]
                skip_to = None
            decided = planner.classify_page(page)
            report.blobs_listed += len(page)
            report.blobs_live += decided.live
            report.blobs_kept_grace += decided.grace
            pending.extend(decided.doomed)
            while len(pending) >= self.batch_size:
                if swept is not None and self._bound_reached(report):
                    return swept, swept_token
                batch = pending[: self.batch_size]
                del pending[: self.batch_size]
                self._flush(planner, report, batch)
                # A batch is flushed only once this page made pending full: it ends in this page.
                swept, swept_token = batch[-1].name[start:], listed.token
            self.progress.blobs(report.blobs_listed, report.blobs_deleted)
            if listed.next_token is not None and page and self._bound_reached(report):
                # Between pages (a stretch of live blobs may hold no batch): flush what is pending
                # (less than a batch) and resume with the next page.
                if pending:
                    self._flush(planner, report, pending)
                return page[-1].name[start:], listed.next_token
        if pending:
            if swept is not None and self._bound_reached(report):
                return swept, swept_token
            self._flush(planner, report, pending)
            self.progress.blobs(report.blobs_listed, report.blobs_deleted)
        return None, None

    def _pages(self, report: CacheReport) -> Iterator[BlobPage]:
        """The listing from the stored token; from the start if the service refuses it."""
        token = self._resume_token
        pages = self.store.blob_pages(token)
        try:
            first = next(pages, None)
        except ListingTokenRefusedError:
            report.resume_token_refused = True
            pages = self.store.blob_pages(None)
            first = next(pages, None)
        if first is None:
            return
        report.listing_pages += 1
        yield first
        for page in pages:
            report.listing_pages += 1
            yield page

    def _bound_reached(self, report: CacheReport) -> bool:
        if self.max_deletes is not None and report.blobs_deleted >= self.max_deletes:
            return True
        return self.max_seconds is not None and self.monotonic() - self._started >= self.max_seconds

    def _ripe(self, blob: BlobEntry, ripe_before: datetime, start: int) -> bool:
        seen = self._previous.get(blob.name[start:])
        return seen is not None and seen.etag == blob.etag and seen.first_seen <= ripe_before

    def _flush(self, planner: MarkSweepPlanner, report: CacheReport, pending: list[BlobEntry]) -> None:
        ripe_before = planner.now - self.policy.settle
        start = len(self.layout.blobs_prefix)
        unreferenced = [b for b in pending if planner.still_unreferenced(b)]
        if any(self._ripe(b, ripe_before, start) for b in unreferenced):
            # Something would be deleted: list the manifests (and read the changed ones) first.
            if not self._recheck(planner, report):
                report.blobs_live += len(pending)  # manifests still moving: keep this batch, be safe
                return
            unreferenced = [b for b in unreferenced if planner.still_unreferenced(b)]
        report.blobs_live += len(pending) - len(unreferenced)
        doomed: list[BlobEntry] = []
        for blob in unreferenced:
            digest = blob.name[start:]
            seen = self._previous.get(digest)
            if self._ripe(blob, ripe_before, start):
                doomed.append(blob)
            else:  # first seen now (or re-uploaded since): a later run may delete it
                first = seen.first_seen if seen is not None and seen.etag == blob.etag else planner.now
                self._recorded.append((digest, Candidate(blob.etag, first)))
        if self.dry_run or not doomed:
            report.blobs_deleted += len(doomed)
            report.bytes_freed += sum(b.size for b in doomed)
            return
        for blob, outcome in zip(doomed, self.store.delete(doomed), strict=True):
            if outcome is DeleteOutcome.DELETED:
                report.blobs_deleted += 1
                report.bytes_freed += blob.size
            elif outcome is DeleteOutcome.FAILED:
                report.delete_failures += 1
                digest = blob.name[start:]
                self._recorded.append((digest, self._previous[digest]))
            # GONE: someone else deleted it; CHANGED: uploaded again since listed, so young.


def _fill_names(report: CacheReport, planner: MarkSweepPlanner) -> None:
    names = [
        NameReport(
            name=name,
            size_bytes=d.manifest.size,
            blobs=len(d.manifest.blobs),
            last_export=d.manifest.last_modified,
            expired=d.expired,
            reason=str(d.reason),
        )
        for name, d in sorted(planner.names.items())
    ]
    report.names = names
    report.manifests_expired = sum(1 for n in names if n.expired)
    report.manifests_kept = len(names) - report.manifests_expired
