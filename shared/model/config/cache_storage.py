"""Where BuildKit's azblob cache lives (``cache:``), and the storage account it signs as."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from shared.model.config.base import LocatedValueError, StrictModel
from shared.model.durations import Duration
from shared.model.loopback import is_loopback

# BuildKit's azblob cache signs with the storage account name, which it takes from the first DNS
# label of account_url's host unless the account_name attribute gives it (moby/buildkit
# cache/remotecache/azblob/utils.go getConfig; the attribute exists since v0.12.0, commit ef0a352).
# So Slipway always passes account_name, derived here: "<account>.blob.<suffix>" hosts (public and
# sovereign clouds) name it in the host; a path-style URL (Azurite, an endpoint by IP) names it in
# its one path segment. Azure account names are 3-24 lowercase letters and digits (Azurite allows
# other lengths), so the pattern checks the alphabet and the upper bound only.
STORAGE_ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9]{1,24}$")
_ACCOUNT_HOST_RE = re.compile(r"^(?P<account>[a-z0-9]{1,24})\.blob\.")


def storage_account_name(account_url: str) -> str | None:
    """The account ``account_url`` names (host label or path segment), or None if it names none."""
    parts = urlsplit(account_url)
    segments = [segment for segment in parts.path.split("/") if segment]
    found = _ACCOUNT_HOST_RE.match((parts.hostname or "").lower())
    if found:  # a path after it would be taken for the container: no account URL
        return None if segments else found.group("account")
    if len(segments) == 1 and STORAGE_ACCOUNT_NAME_RE.match(segments[0]):
        return segments[0]
    return None


class CacheStorage(StrictModel):
    """Where BuildKit's azblob cache lives (shared by all targets)."""

    account_url: str = Field(
        description="https://<account>.blob.core.windows.net, or path-style http(s)://host[:port]/<account> "
        "(Azurite: http://127.0.0.1:10000/devstoreaccount1)."
    )
    account_name: str | None = Field(
        default=None,
        description="The storage account's name, which BuildKit signs with. Default: the <account> of "
        "account_url; required when account_url names none (a custom domain, a private endpoint by IP).",
        json_schema_extra={"pattern": STORAGE_ACCOUNT_NAME_RE.pattern},
    )
    container: str = "buildkit-cache"
    prefix: str = ""
    auth: Literal["account-key", "service-principal"] = Field(
        default="account-key",
        description="account-key: setting SLIPWAY_CACHE_ACCOUNT_KEY. service-principal: settings "
        "SLIPWAY_CACHE_TENANT_ID, SLIPWAY_CACHE_CLIENT_ID, SLIPWAY_CACHE_CLIENT_SECRET.",
    )
    # Garbage collection (`slipway prune cache` and the cache-prune timer).
    grace: Duration = Field(
        default=timedelta(hours=24),
        json_schema_extra={"default": "24h"},
        description="Never delete a blob younger than this: an export uploads its blobs before its "
        "manifest. At least 1h; keep it above the longest build.",
    )
    keep_names: list[str] = Field(
        default_factory=list, description="Globs on cache names whose manifests never expire."
    )
    max_age: Duration | None = Field(
        default=timedelta(days=14),
        json_schema_extra={"default": "14d"},
        description="Other cache names expire when not exported for this long (null: never by age).",
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Optional budget for the cache's blobs: the least recently exported names expire first.",
    )

    @field_validator("account_url")
    @classmethod
    def _account_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("account_url must be an http(s) URL")
        if value.startswith("http://") and not is_loopback(urlsplit(value).hostname or ""):
            # BuildKit and the collector would send the account key's signatures or a service
            # principal's token over it in clear: plain http is only for an emulator on this machine.
            raise ValueError(
                "account_url may be plain http only on loopback (Azurite); use https for any other host"
            )
        return value.rstrip("/")

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("grace must be at least 1h: a shorter one can delete an export's new blobs")
        return value

    @field_validator("account_name")
    @classmethod
    def _account_name(cls, value: str | None) -> str | None:
        if value is not None and not STORAGE_ACCOUNT_NAME_RE.match(value):
            raise ValueError(
                "account_name must be a storage account name: lowercase letters and digits, at most 24"
            )
        return value

    @model_validator(mode="after")
    def _named_account(self) -> CacheStorage:
        if self.account_name is None and storage_account_name(self.account_url) is None:
            raise LocatedValueError(
                f"{self.account_url} does not name its storage account (<account>.blob.<suffix>, or "
                "a path-style .../<account>): set cache.account_name, which BuildKit signs requests with",
                at=("account_url",),
            )
        return self

    @property
    def resolved_account_name(self) -> str:
        """The account BuildKit must sign as (validated: the model refuses a URL naming none)."""
        name = self.account_name or storage_account_name(self.account_url)
        if name is None:  # only a model built without validation gets here
            raise ValueError(f"cache.account_url {self.account_url} does not name its storage account")
        return name
