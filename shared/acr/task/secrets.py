"""The run's secrets: which a run needs, how each is checked, and where it goes in the task.

Secrets never appear in the YAML. Each is a ``SetValue`` with ``isSecret: true`` holding the base64
of the secret (volume values must be base64), referenced only as a Go template placeholder
(``{{.Values.slipwayCacheAccountKey}}``) inside a second secret volume, ``slipway-secrets``, mounted
at ``/run/slipway-secrets``. Those files pass through ACR's unquoted here-document (see
``scripts``), so secrets are limited to alphabets without ``$``, backquote, backslash and quotes;
the scripts read them with ``$(cat ...)``, which drops the newline ACR appends.

Cache credentials, and what each choice exposes:

* ``service-principal``: the setup script passes the tenant, client id and client secret to the
  builder as ``--driver-opt env.AZURE_TENANT_ID=...`` (and ``AZURE_CLIENT_ID``,
  ``AZURE_CLIENT_SECRET``); BuildKit's azblob backend reads them through the Go SDK's
  ``DefaultAzureCredential`` *inside buildkitd*. They are visible in the builder container's
  configuration (``docker inspect`` on the agent) and in the ``docker buildx create`` argv while it
  runs, never in any text Slipway sends.
* ``account-key``: BuildKit reads an account key only from the ``secret_access_key`` cache
  attribute. The build script appends ``,secret_access_key=$key`` to the ``--cache-from`` and
  ``--cache-to`` attributes at run time, so the key is in the buildx argv (visible to processes on
  the agent while the build runs) and in the builder's build-history record (buildkitd stores the
  frontend attributes, which carry the cache imports). BuildKit's provenance attestation drops
  ``cache-imports``, so the key does not reach the pushed image. The builder lives on the
  per-run agent, so this is accepted; prefer ``service-principal`` where that matters.

``needed_slots`` is the one rule for which secrets a run needs: the renderer makes values of
those, and ``shared.acr.run_prepare`` reads their settings.

A fork pull request's run (``shared.acr.task.pr_isolation`` says why) gets no Git token, no cache
account key (a ``# syntax=`` frontend the Dockerfile names receives the cache imports' attributes),
and instead of the run's own registry login the ACR token of ``FORK_REGISTRY_TOKEN``: not a volume
file, but the run request's ``credentials.customRegistries`` entry, which acr-builder logs in with.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shared.acr.task.spec import ACB_HEREDOC_DELIMITER, RenderError
from shared.model.config import SlipwayConfig

# Secrets: the dispatcher's settings, checked here because they pass through ACR's here-document
# and (cache credentials) through buildx's comma-separated option parser.
_SAFE_PRINTABLE_CLASS = r"""[!#%&()*+\-./0-9:;<=>?@A-Z\[\]^_a-z{|}~]"""
_SECRET_TOKEN_RE = re.compile(rf"^{_SAFE_PRINTABLE_CLASS}{{1,4096}}$")
_ACCOUNT_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{4,1024}={0,2}$")
_DIRECTORY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")


@dataclass(frozen=True)
class SecretSlot:
    """One secret a run may carry: where it comes from, how it is checked, where it goes."""

    attr: str  # RunSecrets attribute
    value_name: str  # SetValue name, referenced as {{.Values.<name>}}
    file: str  # file name in the slipway-secrets volume
    pattern: re.Pattern[str]
    rule: str
    # The cache authentication that needs it and the app setting holding it; None for the Git
    # token, whose setting the target names (Target.git_token_setting).
    cache_auth: str | None = None
    setting: str | None = None


SECRET_SLOTS = (
    SecretSlot(
        "cache_account_key",
        "slipwayCacheAccountKey",
        "cache-account-key",
        _ACCOUNT_KEY_RE,
        "must be base64 text (a storage account key)",
        cache_auth="account-key",
        setting="SLIPWAY_CACHE_ACCOUNT_KEY",
    ),
    SecretSlot(
        "cache_tenant_id",
        "slipwayCacheTenantId",
        "cache-tenant-id",
        _DIRECTORY_ID_RE,
        "must be a tenant id or domain (letters, digits, '.', '-')",
        cache_auth="service-principal",
        setting="SLIPWAY_CACHE_TENANT_ID",
    ),
    SecretSlot(
        "cache_client_id",
        "slipwayCacheClientId",
        "cache-client-id",
        _DIRECTORY_ID_RE,
        "must be a client id (letters, digits, '.', '-')",
        cache_auth="service-principal",
        setting="SLIPWAY_CACHE_CLIENT_ID",
    ),
    SecretSlot(
        "cache_client_secret",
        "slipwayCacheClientSecret",
        "cache-client-secret",
        _SECRET_TOKEN_RE,
        "must be printable ASCII without spaces, quotes, ',', '$', '`' or '\\'",
        cache_auth="service-principal",
        setting="SLIPWAY_CACHE_CLIENT_SECRET",
    ),
    SecretSlot(
        "git_token",
        "slipwayGitToken",
        "git-token",
        _SECRET_TOKEN_RE,
        "must be printable ASCII without spaces, quotes, ',', '$', '`' or '\\'",
    ),
)
SLOTS = {slot.attr: slot for slot in SECRET_SLOTS}
# An ACR token's name (5-50 letters, digits, '-' and '_': the registries/tokens resource name,
# learn.microsoft.com/azure/templates/microsoft.containerregistry/registries/tokens) and one of its
# passwords, as ``<name>:<password>``: the token name is the user name a client logs in with
# (learn.microsoft.com/azure/container-registry/container-registry-repository-scoped-permissions,
# "Authenticate with token"). A service principal's client id (a GUID) fits the name's alphabet.
_REGISTRY_TOKEN_RE = re.compile(rf"^[A-Za-z0-9_-]{{5,50}}:{_SAFE_PRINTABLE_CLASS}{{1,4096}}$")
# The fork's registry token: read from the setting the policy names, sent as registry credentials.
FORK_REGISTRY_TOKEN = SecretSlot(
    "fork_registry_token",
    "",  # never a value of the task: the run request's credentials carry it
    "",
    _REGISTRY_TOKEN_RE,
    "must be <token name>:<password> (an ACR token's name, then one of its passwords; no spaces, "
    "quotes, ',', '$', '`' or '\\')",
)
# What stands in for a secret whose setting is not set (``slipway render``, a dry run): each passes
# its slot's check, so the task keeps the shape a real run has. The key decodes to a note.
SECRET_PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "cache_account_key": base64.b64encode(b"slipway placeholder: no cache account key").decode(),
        "cache_tenant_id": "placeholder.invalid",
        "cache_client_id": "placeholder.invalid",
        "cache_client_secret": "slipway-placeholder",
        "git_token": "slipway-placeholder",
        "fork_registry_token": "slipway-placeholder:placeholder",
    }
)


@dataclass(frozen=True)
class RunSecrets:
    """Secrets the dispatcher resolved from app settings. ``repr`` shows only which are set."""

    cache_account_key: str | None = field(default=None, repr=False)
    cache_tenant_id: str | None = field(default=None, repr=False)
    cache_client_id: str | None = field(default=None, repr=False)
    cache_client_secret: str | None = field(default=None, repr=False)
    git_token: str | None = field(default=None, repr=False)
    fork_registry_token: str | None = field(default=None, repr=False)  # <token name>:<password>

    def __repr__(self) -> str:
        present = [slot.attr for slot in (*SECRET_SLOTS, FORK_REGISTRY_TOKEN) if getattr(self, slot.attr)]
        return f"RunSecrets(set={present})"


# Every secret a run may carry, by RunSecrets attribute (``slipway doctor`` checks each value).
ALL_SLOTS = {**SLOTS, FORK_REGISTRY_TOKEN.attr: FORK_REGISTRY_TOKEN}


def fork_cache_allowed(config: SlipwayConfig) -> bool:
    """Whether a fork's run may use the cache: not with an account key, which would travel in the
    cache attributes a frontend of the Dockerfile's choosing receives (``pr_isolation``)."""
    return config.cache is not None and config.cache.auth != "account-key"


def needed_slots(config: SlipwayConfig, *, git_token: bool, fork: bool = False) -> tuple[SecretSlot, ...]:
    """The volume secrets a run needs, in slot order: the cache's (by its authentication), and the
    Git token when the build fetches with one (``shared.acr.run_prepare`` reads their settings).
    A fork's run: never the Git token, and the cache's only where ``fork_cache_allowed``."""

    def needed(slot: SecretSlot) -> bool:
        if slot.cache_auth is None:  # the Git token
            return git_token and not fork
        if fork and not fork_cache_allowed(config):
            return False
        return config.cache is not None and config.cache.auth == slot.cache_auth

    return tuple(filter(needed, SECRET_SLOTS))


def registry_login(value: str) -> tuple[str, str]:
    """(user name, password) of a checked ``fork_registry_token`` value."""
    user, _colon, password = value.partition(":")
    return user, password


def check_secret(slot: SecretSlot, value: str | None) -> str | None:
    """The secret, or None when it is not set; raises ``RenderError`` naming the slot, never the value."""
    if value is None or value == "":
        return None
    # Never echo the value: the message ends up in dead-letter reasons and logs.
    if not slot.pattern.match(value) or value == ACB_HEREDOC_DELIMITER:
        raise RenderError(f"secrets.{slot.attr}", slot.rule)
    return value
