"""The one way a BuildRequest becomes the run ACR gets: the dispatcher's and ``slipway render``'s.

Both resolve the target's secrets from settings and render with ``render_run``; only what they do
with the result differs. A secret whose setting is not set gets a *placeholder* value, so the
task has exactly the shape a real run has (the ``slipway-secrets`` volume, its mounts, the Git
token line): ``slipway render`` shows the task the dispatcher sends, and a dry run records it. The
secret values never reach the task text either way (they are ``{{.Values.x}}`` placeholders), so
the two tasks are equal but for the run's result marker.

``missing`` names the settings a real run lacks: the dispatcher refuses such a run (a real
backend) or records that it could not run (the dry run). A fork pull request's run needs other
settings than the target's other runs: never the Git token, the cache's only where a fork may use
the cache, and the ACR token its policy names (``shared.acr.task.pr_isolation``). Azurite's
development account, the local example's cache, needs no setting: its key is published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.acr.task import RESULT_MARKER, SECRET_PLACEHOLDERS, RunSecrets, RunSpec, render_run
from shared.acr.task.pr_isolation import is_fork_run
from shared.acr.task.secrets import FORK_REGISTRY_TOKEN, needed_slots
from shared.model.build_request import BuildRequest
from shared.model.config import SlipwayConfig, Target
from shared.platform.storage import DEVELOPMENT_STORAGE_BLOB_ENDPOINT, DEVELOPMENT_STORAGE_KEY

__all__ = [
    "MissingSecret",
    "PreparedRun",
    "prepare_run",
    "resolve_secrets",
    "secret_settings",
]


class MissingSecret(Exception):
    """A setting the target needs for a real run is not set."""


def secret_settings(config: SlipwayConfig, target: Target, *, fork: bool = False) -> dict[str, str]:
    """RunSecrets attribute -> setting name, for every secret a run of ``target`` needs.

    The renderer's rule (``shared.acr.task.secrets.needed_slots``): the cache's secrets by its
    authentication, each in its fixed setting, and the Git token in the setting the target names.
    ``fork``: a fork pull request's run, which gets no Git token and gets the policy's ACR token.
    """
    needed: dict[str, str] = {}
    for slot in needed_slots(config, git_token=bool(target.git_token_setting), fork=fork):
        setting = slot.setting or target.git_token_setting
        if setting:
            needed[slot.attr] = setting
    token_setting = target.pull_requests.fork_registry_token_setting
    if fork and token_setting:
        needed[FORK_REGISTRY_TOKEN.attr] = token_setting
    return needed


def _lookup(
    config: SlipwayConfig, target: Target, settings: Mapping[str, str], *, fork: bool
) -> tuple[dict[str, str | None], list[str]]:
    values: dict[str, str | None] = {}
    missing: list[str] = []
    for attr, setting in secret_settings(config, target, fork=fork).items():
        values[attr] = settings.get(setting) or None
        if values[attr] is None:
            missing.append(setting)
    return values, missing


def _public_default(config: SlipwayConfig, attr: str) -> str | None:
    """Azurite's development account (the local example's cache) has a published key, which the
    cache collector uses too (``shared.pruning.cache_gc.store.cache_service``): a run needs no setting for
    it. (``slipway doctor`` still asks for the setting: from an ACR agent 127.0.0.1 is no cache.)"""
    if (
        attr == "cache_account_key"
        and config.cache is not None
        and config.cache.account_url.rstrip("/") == DEVELOPMENT_STORAGE_BLOB_ENDPOINT
    ):
        return DEVELOPMENT_STORAGE_KEY
    return None


def resolve_secrets(
    config: SlipwayConfig, target: Target, settings: Mapping[str, str], *, required: bool, fork: bool = False
) -> RunSecrets:
    """Secrets from app settings (Key Vault references in Azure); ``required``: raise on a missing one.
    ``fork``: those of a fork pull request's run."""
    values, missing = _lookup(config, target, settings, fork=fork)
    if missing and required:
        raise MissingSecret(f"setting {missing[0]} is not set")
    return RunSecrets(**values)


@dataclass(frozen=True)
class PreparedRun:
    """The run for a request, and the settings (if any) whose placeholders stand in for a secret."""

    spec: RunSpec
    missing: tuple[str, ...] = ()

    @property
    def missing_detail(self) -> str:
        """``setting X is not set`` (or ``settings X, Y are not set``)."""
        if len(self.missing) == 1:
            return f"setting {self.missing[0]} is not set"
        return f"settings {', '.join(self.missing)} are not set"


def prepare_run(
    request: BuildRequest,
    config: SlipwayConfig,
    target: Target,
    settings: Mapping[str, str],
    *,
    result_marker: str = RESULT_MARKER,
) -> PreparedRun:
    """Render the run of ``request``; a secret whose setting is unset gets its placeholder.

    Raises ``RenderError`` (naming the field) for a request or configuration that cannot run.
    """
    fork = is_fork_run(request)
    values, _ = _lookup(config, target, settings, fork=fork)
    values = {attr: value or _public_default(config, attr) for attr, value in values.items()}
    needed = secret_settings(config, target, fork=fork)
    missing = [setting for attr, setting in needed.items() if values[attr] is None]
    filled = {attr: value or SECRET_PLACEHOLDERS[attr] for attr, value in values.items()}
    spec = render_run(request, config, RunSecrets(**filled), result_marker=result_marker)
    return PreparedRun(spec, tuple(missing))
