"""The registry errors: each failure is typed, so a caller never mistakes an outage, a throttle
or a missing image for a moved tag."""

from __future__ import annotations

from collections.abc import Sequence

from shared.platform.errors import ServiceError


class RegistryError(ServiceError):
    """A registry call failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)  # distribution error codes, e.g. ("MANIFEST_UNKNOWN",)


class NotFound(RegistryError):
    """The repository, tag, manifest or blob does not exist (404)."""


class Unauthorized(RegistryError):
    """The registry or its token service refused our credentials (401, 403)."""


class TransientRegistryError(RegistryError):
    """A 5xx, a timeout or a connection failure: try again later, and assume nothing changed."""


class UntrustedRealm(RegistryError):
    """A challenge asked for our credentials at a realm we may not send them to."""


class RateLimited(TransientRegistryError):
    """429: the registry throttles us; ``retry_after`` is its ``Retry-After`` in seconds, if given."""

    def __init__(
        self, message: str, *, retry_after: float | None, status: int | None = 429, codes: Sequence[str] = ()
    ) -> None:
        super().__init__(message, status=status, codes=codes)
        self.retry_after = retry_after


__all__ = [
    "NotFound",
    "RateLimited",
    "RegistryError",
    "TransientRegistryError",
    "Unauthorized",
    "UntrustedRealm",
]
