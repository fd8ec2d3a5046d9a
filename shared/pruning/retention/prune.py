"""One prune pass: for each repository a rule matches, read, plan, re-check, delete.

Just before each tag deletion and each batch of manifest deletions, the tags are read again; if
any moved or appeared, the repository is read again and planned again with those tags kept, and
only what every plan deletes is deleted (a push during the pass can only save manifests, never
doom them). What remains is the time between that read and the registry acting on the batch's
DELETEs (one request each, up to ``delete_concurrency`` of them in flight). Deletions go in waves
(``deletion_waves``): a manifest only after every deleted manifest referencing it is gone; when
one fails, nothing it references is deleted, so a failure never leaves an index pointing at a
deleted child.

The timer's pass is bounded in time (``max_seconds``): past the bound it stops before its next
delete batch, untag or repository. Stopping there is as safe as a failed DELETE (waves go
parents-first, so nothing left references a deleted manifest), and the next run lists, plans and
continues from what is left: retention keeps no state between runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.model.globs import glob_match
from shared.model.retention_rules import ImageRule, rule_for
from shared.platform.app_settings import positive_setting
from shared.platform.errors import is_service_error
from shared.pruning.retention.backend import RetentionBackend, TagDeleteUnsupported
from shared.pruning.retention.graph import RepositoryGraph
from shared.pruning.retention.planner import RepositoryPlan, plan_repository

if TYPE_CHECKING:
    from shared.model.config import SlipwayConfig

logger = logging.getLogger(__name__)

# Host names of token realms (comma-separated) that may receive the registry password besides
# the registry's own host and Docker Hub's auth.docker.io (shared.platform.oci.RegistryClient).
TOKEN_REALMS_SETTING = "SLIPWAY_REGISTRY_AUTH_REALMS"

# The most DELETE requests in flight at once: acr purge's ceiling, "the max number of parallel
# delete requests recommended by ACR server" (Azure/acr-cli cmd/acr/purge.go, maxPoolSize = 32;
# its default is GOMAXPROCS, the CPU count). A backend opts in with ``delete_concurrency``.
MAX_DELETE_CONCURRENCY = 32

# The timer's time bound. host.json's functionTimeout is 5 minutes; the pass stops before its next
# delete batch after 4, leaving a minute for the batch in flight (32 DELETEs) and the log events.
MAX_SECONDS_SETTING = "SLIPWAY_IMAGE_PRUNE_MAX_SECONDS"
DEFAULT_MAX_SECONDS = 240
STOPPED_NOTE = "not done: the pass reached its time bound; the next run plans again and continues"

# Called with (repository about to be read, its position from 1, how many will be read).
Progress = Callable[[str, int, int], None]


@dataclass
class RepositoryOutcome:
    repository: str
    plan: RepositoryPlan | None = None
    deleted: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # digest or tag -> why it was not done
    errors: list[str] = field(default_factory=list)


@dataclass
class PruneReport:
    registry: str
    api: str
    dry_run: bool
    repositories: list[RepositoryOutcome] = field(default_factory=list)
    stopped_early: bool = False  # the time bound was reached: the next run continues
    not_reached: list[str] = field(default_factory=list)  # repositories not read because of it

    @property
    def ok(self) -> bool:
        return not any(r.errors for r in self.repositories)

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape (and what the timer logs)."""
        return {
            "registry": self.registry,
            "api": self.api,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "stopped_early": self.stopped_early,
            "not_reached": list(self.not_reached),
            "summary": self.summary(),
            "repositories": [_outcome_json(r, self.dry_run) for r in self.repositories],
        }

    def summary(self) -> dict[str, int]:
        counts = {"repositories": len(self.repositories), "delete": 0, "keep": 0, "keep-referenced": 0}
        for outcome in self.repositories:
            for decision in outcome.plan.manifests if outcome.plan else ():
                counts[decision.action] += 1
        counts["deleted"] = sum(len(r.deleted) for r in self.repositories)
        counts["untagged"] = sum(len(r.untagged) for r in self.repositories)
        counts["errors"] = sum(len(r.errors) for r in self.repositories)
        return counts


def prune_images(
    backend: RetentionBackend,
    rules: Sequence[ImageRule],
    *,
    dry_run: bool,
    repository: str | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PruneReport:
    """Apply ``rules`` to every repository they match (and ``repository``, a glob, if given).

    With ``max_seconds``, nothing new starts (a repository, an untag, a delete batch) once that
    long has passed on ``clock`` since the call: the report says ``stopped_early``.
    """
    report = PruneReport(backend.registry, backend.api, dry_run)
    deadline = None if max_seconds is None else clock() + max_seconds

    def out_of_time() -> bool:
        if deadline is not None and clock() >= deadline:
            report.stopped_early = True
        return report.stopped_early

    if not rules:
        return report
    when = now or datetime.now(UTC)
    selected = [
        (name, matched)
        for name in backend.list_repositories()
        if (repository is None or glob_match(repository, name))
        and (matched := rule_for(rules, name)) is not None
    ]
    for position, (name, (index, rule)) in enumerate(selected, start=1):
        if out_of_time():
            report.not_reached = [n for n, _ in selected[position - 1 :]]
            break
        if progress is not None:
            progress(name, position, len(selected))
        outcome = RepositoryOutcome(name)
        report.repositories.append(outcome)
        try:
            graph = backend.read_graph(name)
            outcome.plan = plan_repository(graph, rule, now=when, rule_name=f"images[{index}]")
            if not dry_run and (outcome.plan.deletions or outcome.plan.untags):
                _execute(backend, graph, rule, outcome, outcome.plan, when, out_of_time)
        except Exception as exc:  # one repository's failure must not stop the others
            if not is_service_error(exc):
                raise
            outcome.errors.append(f"{name}: {exc}")
            logger.warning("prune %s: %s", name, exc)
    return report


class _TagWatch:
    """The tags as the pass last saw them, re-read before every untag and every delete batch.

    When any tag moved or appeared since the last look, the repository is read and planned again
    with every tag written during the pass kept (``written``), and only what the first plan and
    every later plan delete may still be deleted: a push during the pass can only save manifests.
    """

    def __init__(
        self,
        backend: RetentionBackend,
        graph: RepositoryGraph,
        rule: ImageRule,
        plan: RepositoryPlan,
        now: datetime,
    ) -> None:
        self.backend, self.rule, self.now, self.rule_name = backend, rule, now, plan.rule
        self.repository = graph.repository
        self.seen = {t.name: t.digest for t in graph.tags.values()}
        self.written: set[str] = set()
        self.deletable = set(plan.deletions)
        self.untaggable = {t: graph.tags[t].digest for t in plan.untags}

    def look(self) -> None:
        """Read the tags now; on any change, read and plan the repository again."""
        current = {t.name: t.digest for t in self.backend.read_tags(self.repository)}
        moved = {name for name, digest in current.items() if self.seen.get(name) != digest}
        if not moved:
            self.seen = current  # only deletions: they can free nothing the plan kept
            return
        self.written |= moved
        graph = self.backend.read_graph(self.repository)
        self.seen = {t.name: t.digest for t in graph.tags.values()}
        self.written |= {n for n, d in self.seen.items() if current.get(n) != d}
        again = plan_repository(
            graph, self.rule, now=self.now, rule_name=self.rule_name, written=self.written
        )
        self.deletable &= set(again.deletions)
        self.untaggable = {
            t: d for t, d in self.untaggable.items() if t in again.untags and self.seen.get(t) == d
        }

    def may_untag(self, tag: str) -> bool:
        self.look()
        return tag in self.untaggable


def _execute(
    backend: RetentionBackend,
    graph: RepositoryGraph,
    rule: ImageRule,
    outcome: RepositoryOutcome,
    plan: RepositoryPlan,
    now: datetime,
    out_of_time: Callable[[], bool] = lambda: False,
) -> None:
    watch = _TagWatch(backend, graph, rule, plan, now)
    for tag in plan.untags:
        if out_of_time():
            outcome.skipped[tag] = STOPPED_NOTE
            continue
        if not watch.may_untag(tag):
            outcome.skipped[tag] = "the tag moved during the pass; kept"
            continue
        try:
            backend.delete_tag(graph.repository, tag)
            outcome.untagged.append(tag)
        except TagDeleteUnsupported as exc:
            outcome.skipped[tag] = f"tag kept: {exc}"
        except Exception as exc:
            if not is_service_error(exc):
                raise
            outcome.errors.append(f"untag {tag}: {exc}")
    blocked: set[str] = set()
    workers = max(1, min(backend.delete_concurrency, MAX_DELETE_CONCURRENCY))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prune") as pool:
        for wave in deletion_waves(graph, plan.deletions):
            for start in range(0, len(wave), workers):
                batch = [d for d in wave[start : start + workers] if _unblocked(graph, d, blocked, outcome)]
                if not batch:
                    continue
                if out_of_time():  # between batches: everything referencing what is left is gone
                    outcome.skipped.update(dict.fromkeys(batch, STOPPED_NOTE))
                    continue
                watch.look()  # once per batch: nothing in it goes out before this read
                allowed = [d for d in batch if d in watch.deletable]
                for digest in batch:
                    if digest not in watch.deletable:
                        outcome.skipped[digest] = "a tag written during the pass needs it; kept"
                failures = list(pool.map(lambda d: _delete(backend, graph.repository, d), allowed))
                for digest, failure in zip(allowed, failures, strict=True):
                    if failure is None:
                        outcome.deleted.append(digest)
                    else:
                        outcome.errors.append(f"delete {digest}: {failure}")
                        blocked.update(graph.references(digest))


def deletion_waves(graph: RepositoryGraph, order: Sequence[str]) -> list[list[str]]:
    """``order`` (a manifest before what it references) cut into waves that may run in parallel.

    A manifest's wave is one past the latest wave of the deleted manifests referencing it, so
    when a wave starts, everything that references its manifests is gone; within a wave, the
    plan's order is kept. Linear in manifests plus references.
    """
    position = {digest: i for i, digest in enumerate(order)}
    level = dict.fromkeys(order, 0)
    for digest in order:
        for target in graph.references(digest):
            if target in position and position[target] > position[digest]:
                level[target] = max(level[target], level[digest] + 1)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for digest in order:
        waves[level[digest]].append(digest)
    return waves


def _unblocked(graph: RepositoryGraph, digest: str, blocked: set[str], outcome: RepositoryOutcome) -> bool:
    """False (and noted) when a manifest referencing ``digest`` could not be deleted."""
    if digest not in blocked:
        return True
    outcome.skipped[digest] = "kept: a manifest referencing it could not be deleted"
    blocked.update(graph.references(digest))
    return False


def _delete(backend: RetentionBackend, repository: str, digest: str) -> Exception | None:
    """One DELETE; a service error is returned (reported, the pass goes on), anything else raised."""
    try:
        backend.delete_manifest(repository, digest)
    except Exception as exc:
        if not is_service_error(exc):
            raise
        return exc
    return None


def _outcome_json(outcome: RepositoryOutcome, dry_run: bool) -> dict[str, Any]:
    plan = outcome.plan
    deleted = set(outcome.deleted)  # a set: the report of 100k manifests must stay linear
    manifests = []
    for decision in plan.manifests if plan else ():
        if decision.action == "delete":
            status = (
                "planned"
                if dry_run
                else "deleted"
                if decision.digest in deleted
                else "skipped"
                if decision.digest in outcome.skipped
                else "failed"
            )
        else:
            status = "kept"
        manifests.append(
            {
                "digest": decision.digest,
                "action": decision.action,
                "reason": decision.reason,
                "kind": decision.kind,
                "tags": list(decision.tags),
                "created": decision.created.isoformat() if decision.created else None,
                "referenced_by": list(decision.referenced_by),
                "status": status,
                "note": outcome.skipped.get(decision.digest),
            }
        )
    tags = [
        {
            "tag": t.tag,
            "digest": t.digest,
            "action": t.action,
            "reason": t.reason,
            "note": outcome.skipped.get(t.tag),
        }
        for t in (plan.tags if plan else ())
    ]
    return {
        "repository": outcome.repository,
        "rule": plan.rule if plan else None,
        "manifests": manifests,
        "tags": tags,
        "deleted": list(outcome.deleted),
        "untagged": list(outcome.untagged),
        "errors": list(outcome.errors),
    }


def backend_from_settings(
    settings: Mapping[str, str], registry: str, api: str | None = None, **options: Any
) -> RetentionBackend:
    """The backend for ``registry``: ACR (Entra ID) for ``*.azurecr.*`` unless ``api`` says otherwise.

    ACR uses the app's identity (``shared.platform.identity.app_credential``: ``AZURE_CLIENT_ID``). Other
    registries are anonymous, or Basic/token auth with ``SLIPWAY_REGISTRY_USERNAME`` and
    ``SLIPWAY_REGISTRY_PASSWORD``; the password goes to a token realm only on the registry's host,
    Docker Hub's, or one named in ``SLIPWAY_REGISTRY_AUTH_REALMS`` (comma-separated host names).
    """
    chosen = api or guess_api(registry)
    if chosen == "acr":
        from shared.platform.identity import app_credential
        from shared.pruning.retention.acr_backend import AcrRetentionBackend

        return AcrRetentionBackend.connect(registry, app_credential(settings), **options)
    if chosen != "oci":
        raise ValueError(f"unknown registry API {chosen!r}: use acr or oci")
    from shared.platform.oci import RegistryClient, registry_base
    from shared.pruning.retention.oci_backend import OciRetentionBackend

    user, password = settings.get("SLIPWAY_REGISTRY_USERNAME"), settings.get("SLIPWAY_REGISTRY_PASSWORD")
    credentials = (user, password) if user and password else None
    realms = [h for h in settings.get(TOKEN_REALMS_SETTING, "").split(",") if h.strip()]
    client = RegistryClient(
        registry_base(registry), credentials=credentials, trusted_realm_hosts=realms, **options
    )
    return OciRetentionBackend(client)


def guess_api(registry: str) -> str:
    from shared.platform.oci import is_acr

    return "acr" if is_acr(registry) else "oci"


def max_seconds_setting(settings: Mapping[str, str]) -> int:
    """``SLIPWAY_IMAGE_PRUNE_MAX_SECONDS``: a positive whole number, 240 when unset."""
    return positive_setting(settings, MAX_SECONDS_SETTING, DEFAULT_MAX_SECONDS)


def run_scheduled_prune(
    config: SlipwayConfig, settings: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> PruneReport | None:
    """The timer's work: prune the configured registry by ``images:``; None when there are no rules.
    Bounded by ``SLIPWAY_IMAGE_PRUNE_MAX_SECONDS`` (read before anything is deleted)."""
    from shared.platform.logs import log_event

    if not config.images:
        log_event(logger, "image_prune_skipped", reason="no images: rules in the configuration")
        return None
    dry_run = (settings.get("SLIPWAY_IMAGE_PRUNE_DRY_RUN") or "").strip().lower() in {"1", "true", "yes"}
    try:
        bound = max_seconds_setting(settings)
    except ValueError as exc:
        log_event(logger, "image_prune_failed", level=logging.ERROR, error=str(exc))
        raise
    backend = backend_from_settings(settings, config.registry)
    report = prune_images(backend, config.images, dry_run=dry_run, max_seconds=bound, clock=clock)
    summary = report.summary()
    # One event per deleted manifest (the audit trail), then the run's summary, as the cache
    # collector logs: queryable by event name in Application Insights.
    for outcome in report.repositories:
        for digest in outcome.deleted:
            log_event(
                logger,
                "image_deleted",
                registry=report.registry,
                repository=outcome.repository,
                digest=digest,
            )
        for error in outcome.errors:
            log_event(logger, "image_prune_error", level=logging.ERROR, registry=report.registry, error=error)
    log_event(
        logger,
        "image_prune",
        level=logging.ERROR if not report.ok else logging.WARNING if report.stopped_early else logging.INFO,
        registry=report.registry,
        dry_run=dry_run,
        stopped_early=report.stopped_early,
        not_reached=len(report.not_reached),
        **summary,
    )
    if not report.ok:
        raise RuntimeError(f"image prune of {report.registry}: {summary['errors']} error(s); see the log")
    return report
