"""Compact JSON as UTF-8 bytes, for what is written on every webhook (responses, queue records).

pydantic's serializer (loaded anyway with the receivers' models) costs a fifth of ``json``'s. It
refuses text UTF-8 cannot carry, such as a lone surrogate a JSON escape can smuggle into a ref;
``json`` escapes that, so it takes over then. ``json.loads`` reads either back.
"""

from __future__ import annotations

import json

from pydantic_core import PydanticSerializationError, to_json


def compact_json(value: object) -> bytes:
    try:
        return to_json(value)
    except PydanticSerializationError:
        return json.dumps(value, separators=(",", ":")).encode()
