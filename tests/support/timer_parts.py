"""What a timer handler hands its domain call: the runtime's configuration and settings."""

from __future__ import annotations

from collections.abc import Mapping

from shared.app.runtime import Runtime
from shared.model.config import SlipwayConfig


def timer_parts(rt: Runtime) -> tuple[SlipwayConfig, Mapping[str, str]]:
    """As ``handlers/prune_cache.py`` and ``handlers/prune_images.py`` wire it."""
    return rt.config(), rt.settings
