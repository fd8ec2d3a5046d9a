"""What every ``slipway.yaml`` model shares: the strict base, and errors that point inside a field.

Unknown keys are errors (``extra="forbid"``): a misspelt ``branchs:`` must not silently build
every branch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LocatedValueError(ValueError):
    """A validator's error about one part of the value it checks.

    pydantic locates a field validator's error at the field; ``at`` is the rest of the way (a list
    index, a mapping key), so the loader can point at the exact YAML line of ``platforms[3]``
    rather than at ``platforms:``.
    """

    def __init__(self, message: str, *, at: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.at = at


class StrictModel(BaseModel):
    # Frozen: a loaded configuration is a value. Routing caches what it derives from a target
    # (tag plans, request prototypes) by the target's identity.
    model_config = ConfigDict(extra="forbid", frozen=True)
