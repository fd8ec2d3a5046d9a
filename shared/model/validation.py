"""How a pydantic validation failure reads to an operator: each problem located, on one line."""

from __future__ import annotations

from pydantic import ValidationError


def problems(exc: ValidationError, *, limit: int = 5, whole: str = "(body)") -> str:
    """``field.path: message; ...`` for the first ``limit`` problems (``whole`` when at the top)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in exc.errors()[:limit]
    )
