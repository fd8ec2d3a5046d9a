"""The doctor's checks of what it reads before it connects anywhere: the configuration, the
settings the mode needs, the timers' schedules, and each target's run secrets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.app.doctor.report import Failed, Status, problem_text
from shared.app.local_host.functions import DEFAULT_SCHEDULES, invalid_schedules
from shared.app.runtime import acr_configured, service_bus_configured
from shared.platform.storage import STORAGE_SETTING, storage_configured

if TYPE_CHECKING:
    from shared.app.doctor.core import Doctor

ACR_SETTINGS = ("ACR_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP", "ACR_NAME")
# Timer bindings refer to these as %NAME%: in Azure a missing one keeps the function from loading
# (``slipway serve`` fills in defaults, so locally they are optional).
SCHEDULE_SETTINGS = tuple(DEFAULT_SCHEDULES)
# One of these makes a sender usable; without any, no webhook is accepted.
SENDER_SETTINGS = (
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "AZURE_DEVOPS_WEBHOOK_PASSWORD",
    "BITBUCKET_WEBHOOK_SECRET",
    "GITEA_WEBHOOK_SECRET",
    "ACR_WEBHOOK_TOKEN",
    "EVENTGRID_WEBHOOK_TOKEN",
    "DOCKERHUB_WEBHOOK_TOKEN",
)
# What App Service leaves in a setting whose Key Vault reference it could not resolve.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


def check_config(doc: Doctor) -> str:
    from shared.app.config_check import check_config_file
    from shared.model.config import ConfigError, config_path

    path = config_path(doc.settings, doc.app_root)
    if not path.is_file():
        raise Failed(
            f"{path}: no such file",
            "set SLIPWAY_CONFIG to the configuration file (relative to the app root), or deploy one",
        )
    try:
        # The same check as `config validate`: the models, then a rendered build of each target.
        checked = check_config_file(path)
    except ConfigError as exc:
        first = "; ".join(problem_text(p) for p in exc.problems[:3])
        raise Failed(
            f"{path}: {len(exc.problems)} problem(s): {first}",
            f"fix {path}; `slipway config validate {path}` lists every problem",
        ) from exc
    except OSError as exc:
        raise Failed(f"{path}: {exc.strerror or exc}", f"make {path} readable") from exc
    doc.config = checked.config
    count = len(checked.config.targets)
    detail = f"{path}: {count} target{'s' if count != 1 else ''}, each renders"
    if checked.warnings:
        detail += f"; warnings: {'; '.join(problem_text(w) for w in checked.warnings)}"
    return detail


def check_settings(doc: Doctor) -> str:
    settings = doc.settings
    problems: list[str] = []
    fixes: list[str] = []
    unresolved = sorted(k for k, v in settings.items() if v.strip().startswith(KEY_VAULT_REFERENCE))
    if unresolved:
        problems.append(f"Key Vault reference(s) not resolved: {', '.join(unresolved)}")
        fixes.append(
            "create the secret in the vault (`az keyvault secret set`) and grant the app identity "
            "Key Vault Secrets User on the vault"
        )
    acr_set = [name for name in ACR_SETTINGS if settings.get(name)]
    if acr_set and len(acr_set) < len(ACR_SETTINGS):
        missing = [name for name in ACR_SETTINGS if name not in acr_set]
        problems.append(f"registry half-configured: {', '.join(missing)} missing, so dispatch is a dry run")
        fixes.append(f"set {', '.join(missing)} (or unset all three for dry runs)")
    if doc.mode == "azure":
        missing = []
        if not service_bus_configured(settings):
            missing.append("ServiceBusConnection__fullyQualifiedNamespace")
        if not storage_configured(settings):
            missing.append(f"{STORAGE_SETTING}__accountName")
        if not acr_set:  # a half-set registry is named above
            missing.extend(ACR_SETTINGS)
        missing.extend(name for name in SCHEDULE_SETTINGS if not settings.get(name))
        if not settings.get("BUILD_QUEUE"):
            missing.append("BUILD_QUEUE")
        if not any(settings.get(name) for name in SENDER_SETTINGS):
            missing.append("a sender secret (GITHUB_WEBHOOK_SECRET, ...)")
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
            fixes.append(
                "set them as app settings (the azd template in infra/ sets all but the senders' secrets)"
            )
    if problems:
        raise Failed("; ".join(problems), "; ".join(fixes))
    if doc.mode == "local":
        return "local mode: local queue, folder ledger, " + (
            "ACR runs" if acr_configured(settings) else "dry-run dispatch"
        )
    return "azure mode: Service Bus, Blob ledger, ACR runs; schedules and a sender secret set"


def check_schedules(doc: Doctor) -> str:
    """Each timer's schedule setting, as the Functions host would read it (unset: the local
    default, or in Azure the settings check names it)."""
    problems = invalid_schedules(doc.settings)
    if problems:
        raise Failed(
            "; ".join(problems),
            "set it to six NCRONTAB fields, seconds first, e.g. '0 */15 * * * *'",
        )
    set_here = [name for name in SCHEDULE_SETTINGS if doc.settings.get(name)]
    defaults = len(SCHEDULE_SETTINGS) - len(set_here)
    detail = f"{len(set_here)} timer schedule(s) set, each valid NCRONTAB"
    return detail + (f"; {defaults} unset (slipway serve uses its defaults)" if defaults else "")


def check_secrets(doc: Doctor) -> tuple[Status, str] | str:
    """The secrets each target's runs need (cache auth, private repositories), as dispatch does."""
    from shared.acr.run_prepare import secret_settings
    from shared.acr.task import RenderError
    from shared.acr.task.secrets import ALL_SLOTS, check_secret
    from shared.dispatch.dispatcher import MissingSecret, resolve_secrets

    if doc.config is None:
        return Status.SKIP, "configuration not loaded"
    if not acr_configured(doc.settings):
        return Status.SKIP, "dry-run dispatch needs no secrets"
    problems = []
    for target in doc.config.targets:
        policy = target.pull_requests
        # A fork pull request's run needs its own set (its ACR token, no Git token).
        forks = (False, True) if policy.enabled and policy.forks != "off" else (False,)
        for fork in forks:
            whose = f"{target.name}{' (fork pull requests)' if fork else ''}"
            try:
                secrets = resolve_secrets(doc.config, target, doc.settings, required=True, fork=fork)
            except MissingSecret as exc:
                problems.append(f"{whose}: {exc}")
                break
            # The renderer's check of each value, named by its setting (never quoting the value).
            for attr, setting in secret_settings(doc.config, target, fork=fork).items():
                try:
                    check_secret(ALL_SLOTS[attr], getattr(secrets, attr))
                except RenderError as exc:
                    problems.append(f"{whose}: setting {setting} {exc.args[0].partition(': ')[2]}")
    if problems:
        raise Failed("; ".join(problems), "set the settings (Key Vault references in Azure)")
    return f"every target's run secrets are set ({len(doc.config.targets)} targets)"
