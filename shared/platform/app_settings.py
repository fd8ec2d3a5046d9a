"""Reading an app setting: one rule for "not set" wherever Slipway reads one.

App Service and ``local.settings.json`` keep a setting that was cleared as an empty string, and a
value pasted into the portal can carry stray spaces; both mean "not set" to every reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload


def setting(settings: Mapping[str, str], name: str) -> str | None:
    """A setting's value stripped, or None when it is unset or blank."""
    value = settings.get(name)
    return value.strip() if value and value.strip() else None


@overload
def positive_setting(settings: Mapping[str, str], name: str, default: int) -> int: ...
@overload
def positive_setting(settings: Mapping[str, str], name: str, default: None) -> int | None: ...
def positive_setting(settings: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A positive whole number (a work bound), ``default`` when unset; ValueError naming the
    setting otherwise, so a timer fails before it does anything."""
    text = setting(settings, name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {text!r}")
    return int(text)
