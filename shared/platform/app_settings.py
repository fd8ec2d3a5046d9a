"""Reading an app setting: one rule for "not set" wherever Slipway reads one.

App Service and ``local.settings.json`` keep a setting that was cleared as an empty string, and a
value pasted into the portal can carry stray spaces; both mean "not set" to every reader.
"""

from __future__ import annotations

from collections.abc import Mapping


def setting(settings: Mapping[str, str], name: str) -> str | None:
    """A setting's value stripped, or None when it is unset or blank."""
    value = settings.get(name)
    return value.strip() if value and value.strip() else None
