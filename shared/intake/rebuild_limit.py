"""A ceiling on rebuilds that an unsigned sender can cause for one image.

Docker Hub signs nothing: its webhook is authenticated only by the token in its URL, and a
delivery's ``pushed_at`` is what makes it a new update. Whoever holds that URL (it sits in the
Docker Hub repository's settings, readable by every admin of that repository) could otherwise
start a rebuild of every dependent target as often as they like, just by changing the time.

So each image may cause at most ``count`` distinct updates per sliding ``window``; the updates
accepted in the window are kept in one small state document per image, written conditionally.
A retried delivery of an update already counted passes again (it is the same request id, which
duplicate detection drops), so sender retries never eat into the ceiling.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.model.durations import format_duration, parse_duration
from shared.platform.state import StateStore, update

DOCKERHUB_SETTING = "DOCKERHUB_REBUILD_LIMIT"
DEFAULT_LIMIT = "6/1h"
_LIMIT_RE = re.compile(r"^\s*(\d{1,6})\s*/\s*(\S+)\s*$")
_OFF = {"off", "none", "unlimited"}
_KEY_PREFIX = "rebuild-limits"


@dataclass(frozen=True)
class RebuildLimit:
    """At most ``count`` distinct updates of one image per sliding ``window``."""

    count: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.window)}"


def parse_limit(text: str | None) -> RebuildLimit | None:
    """``"6/1h"`` -> 6 updates per hour; empty -> the default; ``off`` -> no ceiling (None).

    Raises ValueError naming the accepted form.
    """
    value = (text or "").strip() or DEFAULT_LIMIT
    if value.lower() in _OFF:
        return None
    match = _LIMIT_RE.match(value)
    if match is None:
        raise ValueError(f"rebuild limit {text!r} is not COUNT/DURATION (e.g. 6/1h) or 'off'")
    count, window = int(match.group(1)), parse_duration(match.group(2))
    if count < 1 or window <= timedelta(0):
        raise ValueError(f"rebuild limit {text!r} needs a count of at least 1 and a positive window")
    return RebuildLimit(count, window)


def limit_from_settings(settings: Mapping[str, str], setting: str) -> RebuildLimit | None:
    return parse_limit(settings.get(setting))


def _key(provider: str, image: str) -> str:
    # Image names may hold characters a state key does not allow; the digest is stable.
    return f"{_KEY_PREFIX}/{provider}/{hashlib.sha256(image.encode()).hexdigest()[:40]}"


def admit(
    store: StateStore,
    *,
    provider: str,
    image: str,
    update_id: str,
    limit: RebuildLimit,
    now: datetime,
) -> bool:
    """Count ``update_id`` against ``image``'s ceiling; False when the ceiling is reached.

    Raises ``StateConflict`` when the document stays contended, and whatever the store raises
    when it cannot be read or written: the caller answers 503 so the sender retries.
    """
    admitted = False
    since = now - limit.window

    def change(current: dict[str, Any] | None) -> Mapping[str, Any] | None:
        nonlocal admitted
        seen = _recent((current or {}).get("updates"), since)
        if update_id in seen:
            admitted = True
            return None
        if len(seen) >= limit.count:
            admitted = False
            return None
        admitted = True
        seen[update_id] = now.isoformat()
        return {"image": image, "updates": seen}

    update(store, _key(provider, image), change)
    return admitted


def _recent(raw: object, since: datetime) -> dict[str, str]:
    """The stored updates still inside the window (anything unreadable is dropped)."""
    kept: dict[str, str] = {}
    if not isinstance(raw, dict):
        return kept
    for update_id, when in raw.items():
        try:
            at = datetime.fromisoformat(when)
        except (TypeError, ValueError):
            continue
        if at.tzinfo is not None and at > since:
            kept[str(update_id)] = when
    return kept
