"""Base-image digest polling: notice a moved tag where no registry webhook exists (MCR, GHCR).

A timer resolves every declared base image to its current digest (``RegistryClient``: a HEAD on
the manifest with the OCI and Docker index and manifest types in ``Accept``, the registry's
bearer challenge answered anonymously, ACR through Entra ID and its token exchange) and compares
it with the digest it saw last, kept in the state store as ``digest-poll/images/<image>.json``.

* **A change rebuilds exactly what a webhook would.** It becomes the same ``ImagePushedEvent`` a
  registry webhook produces (registry, repository, tag, digest) and goes through
  ``route_image_pushes``: same dependents, same commits, same request ids. A webhook and the
  poller reporting the same push therefore enqueue one build (duplicate detection, the ledger).
* **A first sighting only records**: nothing is known to have changed.
* **A failure is never a change.** Errors are recorded on the image's document, logged and
  returned; the stored digest stays. A transient failure (5xx, timeout, refused connection)
  skips the rest of that registry for this tick. A 429 with ``Retry-After`` skips the registry
  until then (``digest-poll/registries/<registry>.json``), so a throttled registry is not hit
  again early by this or another instance.
* **The digest moves on only once the rebuilds are queued.** When the queue cannot be reached
  the change is seen again next tick and re-sent under the same ids.
* **Each image once per tick**, however many targets share it; images pinned by digest are not
  polled (they cannot move).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.intake.base_images import route_image_pushes
from shared.intake.rebuild_queue import send_requests
from shared.intake.routing import Ignored
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig
from shared.model.events import ImagePushedEvent
from shared.model.image_refs import ImageReference, parse_image_reference
from shared.platform.logs import log_event
from shared.platform.oci import (
    AcrTokenProvider,
    RateLimited,
    RegistryClient,
    TransientRegistryError,
    is_acr,
    registry_base,
)
from shared.platform.queue.port import QueueSender
from shared.platform.state import StateStore, update, validate_key
from shared.runs.last_build import read_last_build

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger("slipway.digest_poll")
IMAGE_PREFIX = "digest-poll/images/"
REGISTRY_PREFIX = "digest-poll/registries/"
PROVIDER = "registry-poll"
POLL_TIMEOUT = 15.0  # seconds per request: a tick polls many images within the function timeout
# A Retry-After is honoured up to a day: a bogus one must not silence a registry for good.
MAX_BACKOFF = timedelta(days=1)
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ERROR_CHARS = 500

ClientFactory = Callable[[str], RegistryClient]
Outcome = Literal["first-seen", "unchanged", "changed", "failed", "rate-limited", "skipped"]


class DigestRecord(BaseModel):
    """The last digest seen for one image reference, and the last failure to resolve it."""

    model_config = ConfigDict(extra="ignore")

    image: str
    digest: str | None = None  # None until the first successful resolution
    previous_digest: str | None = None
    first_seen_at: datetime | None = None
    changed_at: datetime | None = None
    checked_at: datetime | None = None
    error: str | None = None
    error_at: datetime | None = None


class RegistryBackoff(BaseModel):
    """A registry asked us (429 + Retry-After) to stay away until ``until``."""

    model_config = ConfigDict(extra="ignore")

    registry: str
    until: datetime
    reason: str


@dataclass(frozen=True)
class ImagePoll:
    image: str
    outcome: Outcome
    digest: str | None = None
    previous: str | None = None
    detail: str | None = None


@dataclass
class PollSummary:
    """What one poll did, for the log and for callers (the timer, tests)."""

    images: list[ImagePoll] = field(default_factory=list)
    queued: list[BuildRequest] = field(default_factory=list)
    scheduled: dict[str, datetime] = field(default_factory=dict)
    ignored: list[Ignored] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _readable_key(prefix: str, name: str) -> str:
    """A state key that shows ``name`` in Storage Explorer and cannot collide (a hash suffix)."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return validate_key(f"{prefix}{_UNSAFE_KEY_CHARS.sub('_', name)[:96]}-{digest}.json")


def image_key(image: str) -> str:
    return _readable_key(IMAGE_PREFIX, image)


def registry_key(registry: str) -> str:
    return _readable_key(REGISTRY_PREFIX, registry)


def polled_images(config: SlipwayConfig) -> dict[str, list[ImageReference]]:
    """Every distinct tagged base image, grouped by registry; references pinned by digest cannot move."""
    seen: dict[str, ImageReference] = {}
    for target in config.targets:
        for text in target.base_images:
            reference = parse_image_reference(text)
            if reference.digest is None and reference.tag is not None:
                seen.setdefault(str(reference), reference)
    grouped: dict[str, list[ImageReference]] = {}
    for name in sorted(seen):
        grouped.setdefault(seen[name].registry, []).append(seen[name])
    return grouped


def registry_clients(
    settings: Mapping[str, str],
    *,
    credential: TokenCredential | None = None,
    timeout: float = POLL_TIMEOUT,
) -> ClientFactory:
    """How the poller talks to each registry.

    ACR (``shared.platform.oci.is_acr``, every cloud): Entra ID through ACR's token exchange, with the
    Function's managed identity (``AZURE_CLIENT_ID`` selects a user-assigned one; AcrPull on the
    registry suffices). Other
    registries: anonymous, answering their bearer challenge. A loopback registry (a local test
    registry) is spoken to over plain http.
    """

    def client_for(registry: str) -> RegistryClient:
        if is_acr(registry):
            from shared.platform.identity import app_credential

            provider = AcrTokenProvider(credential or app_credential(settings), registry, timeout=timeout)
            return RegistryClient(registry, token_provider=provider, timeout=timeout)
        return RegistryClient(registry_base(registry), timeout=timeout)

    return client_for


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


def _record(value: Mapping[str, Any] | None, image: str) -> DigestRecord:
    if value is not None:
        try:
            return DigestRecord.model_validate(value)
        except ValidationError:
            pass  # unreadable: start again, as a first sighting
    return DigestRecord(image=image)


class _Poller:
    """One tick's work: resolve, compare, record; the changes are routed by ``poll_base_images``."""

    def __init__(self, state: StateStore, now: datetime, summary: PollSummary) -> None:
        self.state = state
        self.now = now
        self.summary = summary
        self.changes: list[tuple[ImageReference, str, str]] = []  # (image, old, new)

    def _change(self, image: str, change: Callable[[DigestRecord], DigestRecord | None]) -> None:
        def apply(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            changed = change(_record(stored, image))
            return None if changed is None else changed.model_dump(mode="json")

        update(self.state, image_key(image), apply)

    def _report(self, poll: ImagePoll) -> None:
        self.summary.images.append(poll)
        if poll.outcome in ("failed", "rate-limited"):
            self.summary.errors.append(f"{poll.image}: {poll.detail}")

    def backoff(self, registry: str) -> RegistryBackoff | None:
        found = self.state.get(registry_key(registry))
        if found is None:
            return None
        try:
            backoff = RegistryBackoff.model_validate(found.value)
        except ValidationError:
            return None
        return backoff if backoff.until > self.now else None

    def hold_off(self, registry: str, seconds: float, reason: str) -> datetime:
        until = self.now + min(timedelta(seconds=max(0.0, seconds)), MAX_BACKOFF)
        record = RegistryBackoff(registry=registry, until=until, reason=reason)
        update(self.state, registry_key(registry), lambda _stored: record.model_dump(mode="json"))
        return until

    def skipped(self, images: list[ImageReference], why: str) -> None:
        for reference in images:
            self._report(ImagePoll(str(reference), "skipped", detail=why))

    def failed(self, image: str, exc: BaseException, outcome: Outcome = "failed") -> None:
        message = _short(exc)

        def note(record: DigestRecord) -> DigestRecord:
            return record.model_copy(update={"error": message, "error_at": self.now, "checked_at": self.now})

        self._report(ImagePoll(image, outcome, detail=message))
        try:
            self._change(image, note)
        except Exception as state_error:
            self.summary.errors.append(f"{image}: the failure could not be recorded: {_short(state_error)}")

    def observed(self, reference: ImageReference, digest: str) -> None:
        image = str(reference)
        last: str | None = None  # the digest stored before this tick, as the write saw it

        def seen(current: DigestRecord) -> DigestRecord | None:
            nonlocal last
            last = current.digest
            if last is not None and last != digest:
                return None  # a change: recorded once its rebuilds are queued
            fields: dict[str, Any] = {"checked_at": self.now, "error": None, "error_at": None}
            if last is None:
                fields.update(digest=digest, first_seen_at=self.now)
            return current.model_copy(update=fields)

        self._change(image, seen)
        if last is not None and last != digest:
            self.changes.append((reference, last, digest))
            self._report(ImagePoll(image, "changed", digest, last))
        else:
            self._report(ImagePoll(image, "first-seen" if last is None else "unchanged", digest))

    def moved(self, image: str, old: str, new: str) -> None:
        def move(current: DigestRecord) -> DigestRecord | None:
            if current.digest == new:
                return None  # another instance recorded it already
            return current.model_copy(
                update={
                    "digest": new,
                    "previous_digest": current.digest or old,
                    "changed_at": self.now,
                    "checked_at": self.now,
                    "error": None,
                    "error_at": None,
                }
            )

        self._change(image, move)

    def poll_registry(self, registry: str, images: list[ImageReference], clients: ClientFactory) -> None:
        backoff = self.backoff(registry)
        if backoff is not None:
            self.skipped(
                images, f"{registry} asked to wait until {backoff.until.isoformat()} ({backoff.reason})"
            )
            return
        try:
            client = clients(registry)
        except Exception as exc:
            for reference in images:
                self.failed(str(reference), exc)
            return
        for index, reference in enumerate(images):
            image = str(reference)
            try:
                digest = client.resolve_digest(image)
            except RateLimited as exc:
                self.failed(image, exc, "rate-limited")
                rest = images[index + 1 :]
                if exc.retry_after is not None:
                    until = self.hold_off(registry, exc.retry_after, _short(exc))
                    self.skipped(rest, f"{registry} asked to wait until {until.isoformat()}")
                else:
                    self.skipped(rest, f"{registry} is rate limiting; retried next tick")
                return
            except TransientRegistryError as exc:
                self.failed(image, exc)
                self.skipped(images[index + 1 :], f"{registry} failed this tick; retried next tick")
                return
            except Exception as exc:  # NotFound, Unauthorized, a malformed answer: this image only
                self.failed(image, exc)
                continue
            try:
                self.observed(reference, digest)
            except Exception as exc:
                self.summary.errors.append(f"{image}: the state store failed: {_short(exc)}")


def poll_base_images(
    config: SlipwayConfig,
    *,
    now: datetime,
    state: StateStore,
    queue: QueueSender,
    clients: ClientFactory,
    correlation_id: str | None = None,
) -> PollSummary:
    """Poll every declared base image once; queue the rebuilds a moved tag calls for.

    Returns per-image outcomes, the requests queued, and every failure (also logged). Never
    raises for a registry, state or queue failure: the next tick tries again.
    """
    summary = PollSummary()
    correlation = correlation_id or f"poll-{now.strftime('%Y%m%dT%H%M%SZ')}"
    poller = _Poller(state, now, summary)
    for registry, images in polled_images(config).items():
        try:
            poller.poll_registry(registry, images, clients)
        except Exception as exc:  # the state store failed while reading a backoff: next registry
            summary.errors.append(f"{registry}: {_short(exc)}")
    if poller.changes:
        _rebuild(poller, config, queue, correlation)
    _log(summary, correlation)
    return summary


def _rebuild(poller: _Poller, config: SlipwayConfig, queue: QueueSender, correlation_id: str) -> None:
    summary, now = poller.summary, poller.now
    events = [
        ImagePushedEvent(
            provider=PROVIDER,
            delivery_id=None,
            received_at=now,
            registry=reference.registry,
            repository=reference.repository,
            tag=reference.tag,
            digest=new,
        )
        for reference, _old, new in poller.changes
    ]
    try:
        result = route_image_pushes(
            events,
            config,
            last_builds=lambda target: read_last_build(poller.state, target),
            correlation_id=correlation_id,
            now=now,
        )
        send_requests(
            queue,
            result.accepted,
            correlation_id=correlation_id,
            subject="base-image",
            scheduled=result.scheduled,
        )
    except Exception as exc:  # the queue, or the state store reading last builds
        summary.errors.append(f"rebuilds not queued ({_short(exc)}); the change is seen again next tick")
        return
    summary.queued.extend(result.accepted)
    summary.scheduled.update(result.scheduled)
    summary.ignored.extend(result.ignored)
    summary.notes.extend(result.notes)
    for reference, old, new in poller.changes:
        try:
            poller.moved(str(reference), old, new)
        except Exception as exc:  # queued already: the next tick re-sends under the same ids
            summary.errors.append(
                f"{reference}: rebuilds queued, but the new digest was not recorded: {_short(exc)}"
            )


def _log(summary: PollSummary, correlation_id: str) -> None:
    for poll in summary.images:
        if poll.outcome == "changed":
            log_event(
                logger,
                "base_image_changed",
                correlation_id=correlation_id,
                image=poll.image,
                digest=poll.digest,
                previous=poll.previous,
            )
    for error in summary.errors:
        log_event(
            logger, "base_image_poll_error", level=logging.ERROR, correlation_id=correlation_id, error=error
        )
    counts: dict[str, int] = {}
    for poll in summary.images:
        counts[poll.outcome] = counts.get(poll.outcome, 0) + 1
    log_event(
        logger,
        "base_images_polled",
        correlation_id=correlation_id,
        queued=len(summary.queued),
        errors=len(summary.errors),
        **{outcome.replace("-", "_"): count for outcome, count in sorted(counts.items())},
    )


def poll_status(
    config: SlipwayConfig, state: StateStore, *, now: datetime
) -> tuple[list[DigestRecord], list[RegistryBackoff]]:
    """Every polled base image with its last digest and failure, and the registries still backed
    off (``slipway polls list``). An image never resolved yet has no digest."""
    polled = polled_images(config)
    images = []
    for references in polled.values():
        for reference in references:
            found = state.get(image_key(str(reference)))
            images.append(_record(found.value if found is not None else None, str(reference)))
    backoffs = []
    for registry in polled:
        found = state.get(registry_key(registry))
        if found is None:
            continue
        try:
            backoff = RegistryBackoff.model_validate(found.value)
        except ValidationError:
            continue
        if backoff.until > now:
            backoffs.append(backoff)
    return images, backoffs
