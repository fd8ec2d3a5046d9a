"""Durations as written in ``slipway.yaml`` and on the command line: ``90s``, ``24h``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

DURATION_PATTERN = r"^([0-9]+[smhdw])+$"
_PART_RE = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``"1d12h"`` -> 36 hours. Raises ValueError with the accepted form in the message."""
    compact = text.strip().lower()
    if not re.fullmatch(DURATION_PATTERN, compact):
        raise ValueError(
            f"duration {text!r} is not a number with a unit s, m, h, d or w (e.g. 24h, 14d, 1d12h)"
        )
    try:
        return timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in _PART_RE.findall(compact)))
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def format_duration(value: timedelta) -> str:
    """The compact form ``parse_duration`` reads back: 36 hours -> ``"1d12h"``, zero -> ``"0s"``."""
    remaining = int(value.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, seconds in _UNITS.items():
        count, remaining = divmod(remaining, seconds)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"a duration needs a unit: write {value}s, {value}h or {value}d")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["24h", "14d"]}),
]
"""A ``timedelta`` field written and dumped as ``24h``/``14d``."""
