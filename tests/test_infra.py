"""The azd template (azure.yaml, infra/) against the code it deploys: these fail when they drift."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.app.runtime import DEFAULT_QUEUE
from shared.dispatch.claims import CLAIM_LEASE
from shared.model.dispatch_settings import DispatchSettings
from shared.platform.ledger import DEFAULT_CONTAINER
from shared.platform.queue.port import (
    QUEUE_DUPLICATE_DETECTION_WINDOW,
    QUEUE_LOCK_DURATION,
    QUEUE_MAX_DELIVERY_COUNT,
)
from shared.platform.state import DEFAULT_STATE_CONTAINER
from tests.support import bicep
from tests.support.index_app import index_in_subprocess
from tests.support.settings_read import settings_read_by_code

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Azure built-in roles, name -> id, as the ID column of Microsoft's built-in roles reference gives
# them: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (source:
# MicrosoftDocs/azure-docs, articles/role-based-access-control/built-in-roles.md at commit
# 00a583295ba737a5caf885472cb3bca3624e9cde, ms.date 04/09/2026; sections Storage, Containers,
# Integration, Security, Monitor, Privileged). Copied from that page, never from infra/: a role id
# the templates use must be one of these, so a mistyped id fails here and not at `azd provision`.
BUILT_IN_ROLES = {
    # Integration
    "Azure Service Bus Data Sender": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
    "Azure Service Bus Data Receiver": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "Azure Service Bus Data Owner": "090c5cfd-751d-490a-894a-3ce6f1109419",
    # Storage
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    # Containers
    "Container Registry Tasks Contributor": "fb382eab-e894-4461-af04-94435c366c3f",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrDelete": "c2f4ef07-c644-48eb-af81-4b1b4947fb11",
    "AcrQuarantineWriter": "c8d4ff99-41c3-41a8-9f60-21dfdad59608",
    # Security
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    # Monitor
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
# Privileged (same page): never granted by the template.
FORBIDDEN_ROLES = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
}
# The ids the first deployment failed on (issue #16): they look like role ids but are none.
NOT_ROLES = {
    "Key Vault Secrets Officer (wrong)": "b86a8fe4-63ce-4c6c-8b9b-d8df1a3f6e95",
    "Monitoring Metrics Publisher (wrong)": "3913510d-42f4-4b42-8a2a-2ad5ab8d2e8f",
}

# Settings the code reads that the template leaves unset on purpose, and why.
OPTIONAL_SETTINGS = {
    "AzureWebJobsStorage": "set identity-based as AzureWebJobsStorage__accountName/__credential/__clientId",
    "ServiceBusConnection": "set identity-based as ServiceBusConnection__fullyQualifiedNamespace",
    "SLIPWAY_STATE_DIR": "local state only (slipway serve); Azure uses Blob Storage",
    "SLIPWAY_LOCAL_MASTER_KEY": "slipway serve only: Azure checks the host's own master key",
    "SLIPWAY_LEDGER_RETENTION": "unset keeps ledger records forever; set it through extraAppSettings",
    "SLIPWAY_LEDGER_EXPORT_DIR": "a local folder: for slipway serve and the CLI, not the Functions host",
    "SLIPWAY_CACHE_PRUNE_MAX_SECONDS": "the code's default (240 s, inside the timeout) is the intended bound",
    "SLIPWAY_CACHE_PRUNE_MAX_DELETES": "unbounded by count unless set through extraAppSettings",
    "SLIPWAY_IMAGE_PRUNE_MAX_SECONDS": "the code's default (240 s, inside the timeout) is the intended bound",
    "SLIPWAY_MAX_BODY_BYTES": "the code's default (25 MiB) is the intended limit; else extraAppSettings",
    "SLIPWAY_ARM_ENDPOINT": "public cloud by default; sovereign clouds: extraAppSettings",
    "SLIPWAY_CACHE_CONNECTION_STRING": "cache.account_url by identity; else secretSettings",
    "SLIPWAY_CACHE_TENANT_ID": "cache.auth service-principal only: extraAppSettings",
    "SLIPWAY_CACHE_CLIENT_ID": "cache.auth service-principal only: extraAppSettings",
    "SLIPWAY_CACHE_CLIENT_SECRET": "cache.auth service-principal only: add to secretSettings",
    "SLIPWAY_REGISTRY_USERNAME": "image retention on a registry other than ACR: extraAppSettings",
    "SLIPWAY_REGISTRY_PASSWORD": "image retention on a registry other than ACR: add to secretSettings",
    "SLIPWAY_REGISTRY_AUTH_REALMS": "image retention on a registry other than ACR: extraAppSettings",
    "GITLAB_WEBHOOK_TOKEN": "per Git host: add to secretSettings",
    "AZURE_DEVOPS_WEBHOOK_USER": "per Git host: add to secretSettings",
    "AZURE_DEVOPS_WEBHOOK_PASSWORD": "per Git host: add to secretSettings",
    "BITBUCKET_WEBHOOK_SECRET": "per Git host: add to secretSettings",
    "GITEA_WEBHOOK_SECRET": "per Git host: add to secretSettings",
    "ACR_WEBHOOK_TOKEN": "ACR webhook sender: add to secretSettings",
    "DOCKERHUB_WEBHOOK_TOKEN": "Docker Hub sender: add to secretSettings",
    "DOCKERHUB_REBUILD_LIMIT": "the code's default (6 per image per hour) is the intended ceiling",
    "EVENTGRID_WEBHOOK_TOKEN": "set (Key Vault reference) only with enableEventGrid",
    "SLIPWAY_CACHE_ACCOUNT_KEY": "set (Key Vault reference) only with enableCache",
    "GITHUB_STATUS_TOKEN": "commit statuses: add to secretSettings",
    "GITLAB_STATUS_TOKEN": "commit statuses: add to secretSettings",
    "AZURE_DEVOPS_STATUS_TOKEN": "commit statuses: add to secretSettings",
    "BITBUCKET_STATUS_TOKEN": "commit statuses: add to secretSettings",
    "BITBUCKET_STATUS_USER": "commit statuses: extraAppSettings (a user name, not a secret)",
    "GITEA_STATUS_TOKEN": "commit statuses: add to secretSettings",
    "GITHUB_API_URL": "GitHub Enterprise only: extraAppSettings",
    "GITLAB_API_URL": "self-managed GitLab only: extraAppSettings",
    "AZURE_DEVOPS_API_URL": "Azure DevOps Server only: extraAppSettings",
    "BITBUCKET_API_URL": "tests and proxies only: extraAppSettings",
    "GITEA_BASE_URL": "set with GITEA_STATUS_TOKEN (no default host): extraAppSettings",
}
# Flex Consumption refuses or ignores these (reference §3.6).
FLEX_UNSUPPORTED = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def iso_duration(value: str) -> timedelta:
    """ISO 8601 durations as Service Bus takes them (``P7D``, ``PT10M``, ``PT1H30M``)."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", value)
    assert match and value not in ("P", "PT"), f"not an ISO 8601 duration: {value}"
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def host_timespan(value: str) -> timedelta:
    hours, minutes, seconds = (int(part) for part in value.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _file(name: str) -> Any:
    return bicep.parse(INFRA / name)


def template_settings() -> set[str]:
    """Every app setting name the template can set (fixed, conditional, Key Vault references)."""
    function = _file("app/function.bicep")
    names: set[str] = set()
    for var in ("appSettings", "cacheSettings", "eventGridSettings"):
        for node in bicep.walk(bicep.declaration(function, "variable", var)):
            if node.type == "object":
                names.update(bicep.properties(node))
    main_params = bicep.declaration(_file("main.bicep"), "parameter", "secretSettings")
    names.update(bicep.strings(main_params.named_children[-1]))
    return names


# --------------------------------------------------------------------------------- parsing


def test_every_bicep_file_parses() -> None:
    assert {p.relative_to(INFRA).as_posix() for p in BICEP_FILES} >= {
        "main.bicep",
        "app/function.bicep",
        "app/servicebus.bicep",
        "app/keyvault.bicep",
        "app/rbac.bicep",
        "app/registry.bicep",
    }
    for path in BICEP_FILES:
        assert bicep.problems(bicep.parse(path)) == [], path


def test_the_checker_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text(
        "resource q 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {\n  name: \n"
    )
    assert bicep.problems(bicep.parse(broken))


def test_modules_are_local_files_or_pinned_verified_modules() -> None:
    for path in BICEP_FILES:
        for module in bicep.declarations(bicep.parse(path), "module"):
            source = str(bicep.literal(module.named_children[1]))
            if source.startswith("br/public:"):
                assert re.fullmatch(r"br/public:avm/(res|ptn)/[a-z0-9/-]+:\d+\.\d+\.\d+", source), source
            else:
                assert (path.parent / source).is_file(), f"{path.name}: module {source} is missing"


def test_azure_yaml_deploys_this_folder_as_a_python_function() -> None:
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(
        r"^services:\n  slipway:\n    project: \.\n    language: python\n    host: function$", text, re.M
    )
    function = (INFRA / "app/function.bicep").read_text()
    assert "'azd-service-name': 'slipway'" in function  # azd finds the app by this tag


# --------------------------------------------------------------------------------- settings


def _indexed_binding_settings() -> set[str]:
    found: set[str] = set()
    for function in index_in_subprocess(ROOT):
        for binding in function["raw_bindings"]:
            found.update(re.findall(r"%([A-Za-z0-9_]+)%", json.dumps(binding)))
            if "connection" in binding:
                found.add(binding["connection"])
    return found


def _is_set(name: str, template: set[str]) -> bool:
    """A connection counts as set when its identity-based ``<name>__*`` form is."""
    return name in template or any(key.startswith(f"{name}__") for key in template)


def test_every_setting_the_code_or_a_binding_reads_is_set_or_documented_optional() -> None:
    template = template_settings()
    read = settings_read_by_code(ROOT) | _indexed_binding_settings()
    missing = sorted(name for name in read if not _is_set(name, template) and name not in OPTIONAL_SETTINGS)
    assert not missing, f"read by the code, neither set by infra/ nor in OPTIONAL_SETTINGS: {missing}"
    # The optional table must not rot: each entry is a setting the code still reads.
    assert set(OPTIONAL_SETTINGS) <= read, sorted(set(OPTIONAL_SETTINGS) - read)


def test_identity_based_connections_and_no_flex_deprecated_settings() -> None:
    template = template_settings()
    for prefix in ("AzureWebJobsStorage", "ServiceBusConnection"):
        assert f"{prefix}__credential" in template and f"{prefix}__clientId" in template
        assert prefix not in template, f"{prefix} as a connection string: use the identity-based form"
    assert "AzureWebJobsStorage__accountName" in template
    assert "ServiceBusConnection__fullyQualifiedNamespace" in template
    assert not template & FLEX_UNSUPPORTED, template & FLEX_UNSUPPORTED


def test_template_defaults_are_the_code_defaults() -> None:
    main = _file("main.bicep")

    def default(name: str) -> object:
        return bicep.literal(bicep.declaration(main, "parameter", name).named_children[-1])

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert default("buildQueueName") == DEFAULT_QUEUE == sample["BUILD_QUEUE"]
    assert default("ledgerContainerName") == DEFAULT_CONTAINER == sample["SLIPWAY_LEDGER_CONTAINER"]
    assert default("stateContainerName") == DEFAULT_STATE_CONTAINER == sample["SLIPWAY_STATE_CONTAINER"]
    # Timer schedules: the same defaults as the local sample.
    settings = bicep.properties(
        bicep.body(bicep.declaration(_file("app/function.bicep"), "variable", "appSettings"))
    )
    for name, node in settings.items():
        if name.endswith("_SCHEDULE"):
            assert bicep.literal(node) == sample[name], name


def test_flex_consumption_python_311() -> None:
    function = (INFRA / "app/function.bicep").read_text()
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: '3\.11'\s*\}", function)
    assert "kind: 'functionapp,linux'" in function
    assert re.search(r"name: 'FC1'\s*tier: 'FlexConsumption'", (INFRA / "main.bicep").read_text())
    assert "keyVaultReferenceIdentity: identityId" in function


# ----------------------------------------------------------------------- extra app settings
#
# The template writes the whole app settings set on every deployment (the ``config/appsettings``
# resource), so a setting added by hand is gone after the next ``azd provision``: plain extras
# come in through ``extraAppSettings``, and a name the template owns or one that looks like a
# secret fails the deployment (``fail()``, Bicep's flow-control function:
# https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-flow-control).

# Secret settings the code reads: each must be refused as a plain extra (Key Vault only).
KNOWN_SECRETS = {
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "AZURE_DEVOPS_WEBHOOK_PASSWORD",
    "BITBUCKET_WEBHOOK_SECRET",
    "GITEA_WEBHOOK_SECRET",
    "ACR_WEBHOOK_TOKEN",
    "DOCKERHUB_WEBHOOK_TOKEN",
    "EVENTGRID_WEBHOOK_TOKEN",
    "GITHUB_STATUS_TOKEN",
    "GITLAB_STATUS_TOKEN",
    "AZURE_DEVOPS_STATUS_TOKEN",
    "BITBUCKET_STATUS_TOKEN",
    "GITEA_STATUS_TOKEN",
    "SLIPWAY_CACHE_ACCOUNT_KEY",
    "SLIPWAY_CACHE_CLIENT_SECRET",
    "SLIPWAY_CACHE_CONNECTION_STRING",
    "SLIPWAY_REGISTRY_PASSWORD",
}


def _function_var(name: str) -> Any:
    return bicep.declaration(_file("app/function.bicep"), "variable", name)


def _secret_markers() -> set[str]:
    """The upper-case fragments the template treats as marking a secret setting name."""
    lookup = _function_var("extraSecretLooking")
    return {
        str(bicep.literal(node))
        for node in bicep.walk(lookup)
        if node.type == "string" and str(bicep.literal(node)).isupper()
    }


def _looks_secret(name: str) -> bool:
    return any(marker in name.upper() for marker in _secret_markers())


def _plain_extras() -> set[str]:
    return {name for name, why in OPTIONAL_SETTINGS.items() if "extraAppSettings" in why}


def test_extra_app_settings_is_a_parameter_from_azd_to_the_app() -> None:
    function = _file("app/function.bicep")
    param = bicep.declaration(function, "parameter", "extraAppSettings")
    assert re.search(r"param extraAppSettings object = \{\}$", bicep.text(param))
    main = _file("main.bicep")
    assert re.search(
        r"param extraAppSettings object = \{\}$",
        bicep.text(bicep.declaration(main, "parameter", "extraAppSettings")),
    )
    module = bicep.properties(bicep.body(bicep.declaration(main, "module", "function")))
    assert bicep.text(bicep.properties(module["params"])["extraAppSettings"]) == "extraAppSettings"
    # azd (>= 1.23.4) runs envsubst on the string of an object parameter and parses the result as
    # JSON; an unset variable leaves the parameter out, so the Bicep default {} applies
    # (Azure/azure-dev cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go, loadParameters).
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["extraAppSettings"] == {"value": "${SLIPWAY_EXTRA_APP_SETTINGS}"}


def test_slipway_settings_are_written_after_the_extras() -> None:
    """union(): a later argument's property overwrites an earlier one's
    (https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-object#union)."""
    site = bicep.declaration(_file("app/function.bicep"), "resource", "site")
    [settings] = [n for n in list(bicep.walk(site))[1:] if n.type == "resource_declaration"]
    properties = bicep.properties(bicep.body(settings))["properties"]
    assert bicep.text(properties) == "union(extraSettings, managedSettings)"
    managed = bicep.text(_function_var("managedSettings").named_children[-1])
    # Every settings variable template_settings() counts is part of what the template owns.
    for var in ("appSettings", "cacheSettings", "eventGridSettings", "secretSettingValues"):
        assert re.search(rf"\b{var}\b", managed), var


def test_extras_that_override_or_look_secret_fail_the_deployment() -> None:
    extra = bicep.text(_function_var("extraSettings").named_children[-1])
    calls = re.findall(r"fail\('extraAppSettings: \$\{join\((\w+), ', '\)\}", extra)
    assert calls == ["extraOverriding", "extraSecretLooking"], extra
    overriding = bicep.text(_function_var("extraOverriding").named_children[-1])
    assert "managedNames" in overriding and "managedConnections" in overriding
    assert "toUpper(name)" in overriding  # app setting names are compared without case


def test_every_secret_setting_is_refused_as_a_plain_extra() -> None:
    read = settings_read_by_code(ROOT)
    known = read | template_settings()
    assert not KNOWN_SECRETS - known, sorted(KNOWN_SECRETS - known)
    assert _secret_markers(), "no secret markers found in extraSecretLooking"
    for name in KNOWN_SECRETS:
        assert _looks_secret(name), f"{name} would be accepted as a plain extra app setting"


def test_the_optional_plain_settings_are_accepted_as_extras() -> None:
    plain = _plain_extras()
    assert {"GITLAB_API_URL", "GITEA_BASE_URL", "BITBUCKET_STATUS_USER", "SLIPWAY_MAX_BODY_BYTES"} <= plain
    assert {"SLIPWAY_CACHE_TENANT_ID", "SLIPWAY_CACHE_CLIENT_ID"} <= plain
    template = {name.upper() for name in template_settings()}
    for name in plain:
        assert not _looks_secret(name), f"{name} is plain but the template would refuse it as a secret"
        assert name.upper() not in template, f"{name} is set by the template"
        assert name not in KNOWN_SECRETS


# --------------------------------------------------------------------------------- the queue


def _queue() -> dict[str, object]:
    servicebus = _file("app/servicebus.bicep")
    queue = bicep.properties(bicep.body(bicep.declaration(servicebus, "resource", "queue")))
    return {key: bicep.literal(value) for key, value in bicep.properties(queue["properties"]).items()}


def test_queue_matches_what_the_dispatcher_assumes() -> None:
    queue = _queue()
    assert queue["requiresDuplicateDetection"] is True
    assert iso_duration(str(queue["duplicateDetectionHistoryTimeWindow"])) == QUEUE_DUPLICATE_DETECTION_WINDOW
    assert iso_duration(str(queue["lockDuration"])) == QUEUE_LOCK_DURATION
    assert queue["maxDeliveryCount"] == QUEUE_MAX_DELIVERY_COUNT
    assert queue["deadLetteringOnMessageExpiration"] is True
    assert queue["requiresSession"] is False  # the portal's Service Bus Explorer cannot do sessions


def test_queue_constants_fit_the_dispatcher_and_host_json() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    timeout = host_timespan(host["functionTimeout"])
    renewal = host_timespan(host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"])
    # A delayed retry copy comes back after at most backoff_max: a re-sent duplicate is still caught.
    assert DispatchSettings().backoff_max < QUEUE_DUPLICATE_DETECTION_WINDOW
    assert timedelta(seconds=20) <= QUEUE_DUPLICATE_DETECTION_WINDOW <= timedelta(days=7)
    # Service Bus caps the lock at 5 minutes; the host renews it for the whole invocation.
    assert timedelta(minutes=5) >= QUEUE_LOCK_DURATION
    assert renewal >= timeout
    # A claim older than the lease belongs to an attempt that died: longer than any invocation.
    assert timeout < CLAIM_LEASE
    assert QUEUE_MAX_DELIVERY_COUNT >= 2


def test_service_bus_tier_has_duplicate_detection() -> None:
    main = bicep.declaration(_file("main.bicep"), "parameter", "serviceBusSku")
    allowed = {text for text in re.findall(r"'(\w+)'", bicep.text(main))}
    assert "Basic" not in allowed and allowed <= {"Standard", "Premium"}


# --------------------------------------------------------------------------------- roles


def _role_ids_in(text: str) -> set[str]:
    return {guid.lower() for guid in GUID.findall(text)}


def _role_ids_in_template() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in BICEP_FILES:
        for guid in _role_ids_in(path.read_text()):
            found.setdefault(guid, set()).add(path.name)
    return found


def unverified_role_ids(text: str) -> set[str]:
    """Role ids in a Bicep text that are not in the table taken from Microsoft's page."""
    return _role_ids_in(text) - set(BUILT_IN_ROLES.values())


def test_every_role_id_is_a_verified_built_in_role() -> None:
    used = _role_ids_in_template()
    assert used, "no role assignments found"
    for role_id, files in used.items():
        assert role_id not in FORBIDDEN_ROLES.values(), f"{files}: a forbidden role {role_id}"
        assert not unverified_role_ids(role_id), f"{files}: role id {role_id} is not a verified built-in role"
    for name in (
        "Container Registry Tasks Contributor",
        "Azure Service Bus Data Receiver",
        "Key Vault Secrets User",
        "Key Vault Secrets Officer",
        "Monitoring Metrics Publisher",
    ):
        assert BUILT_IN_ROLES[name] in used, name


def test_the_role_check_refuses_the_ids_that_broke_the_first_deployment() -> None:
    for name, wrong in NOT_ROLES.items():
        text = f"var roles = {{\n  x: '{wrong}'\n}}\n"
        assert unverified_role_ids(text) == {wrong}, name
    assert unverified_role_ids("var roles = {\n  x: '4633458b-17de-408a-b874-0445c86b69e6'\n}\n") == set()


def test_role_names_in_the_templates_match_their_ids() -> None:
    """Each ``roles`` entry's key names the role its id belongs to (``keyVaultSecretsOfficer`` ->
    Key Vault Secrets Officer): an id pasted under the wrong key fails."""
    by_id = {role_id: name for name, role_id in BUILT_IN_ROLES.items()}
    seen = 0
    for path in BICEP_FILES:
        root = bicep.parse(path)
        try:
            roles = bicep.declaration(root, "variable", "roles")
        except KeyError:
            continue
        for key, value in bicep.properties(bicep.body(roles)).items():
            role_id = str(bicep.literal(value))
            assert role_id in by_id, f"{path.name}: {key} = {role_id} is not a verified built-in role"
            name = by_id[role_id]
            assert re.sub(r"[^a-z]", "", name.lower()).endswith(key.lower()), f"{path.name}: {key} is {name}"
            seen += 1
    assert seen >= len(BUILT_IN_ROLES)


def test_role_assignments_reference_the_role_table() -> None:
    for path in BICEP_FILES:
        for resource in bicep.declarations(bicep.parse(path), "resource"):
            if "Microsoft.Authorization/roleAssignments@" not in bicep.text(resource.named_children[1]):
                continue
            props = bicep.properties(bicep.properties(bicep.body(resource))["properties"])
            assert re.fullmatch(
                r"subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions', roles\.\w+\)",
                bicep.text(props["roleDefinitionId"]),
            ), f"{path.name}: {bicep.text(resource.named_children[0])}"
            # Each assignment has a narrow scope: never the resource group or the subscription.
            assert "scope" in bicep.properties(bicep.body(resource)), bicep.text(resource.named_children[0])


def test_acr_delete_and_quarantine_writer_only_when_enabled() -> None:
    registry = _file("app/registry.bicep")
    conditions = {
        "delete": "enableImageRetention",
        "quarantine": "enableQuarantine",
    }
    for name, flag in conditions.items():
        resource = bicep.declaration(registry, "resource", name)
        condition = next(c for c in resource.named_children if c.type == "if_statement")
        assert bicep.text(condition.named_children[0]) == f"({flag})"


def test_readme_roles_table_names_every_role_the_template_grants() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Roles (least privilege)", 1)[1].split("\n## ", 1)[0]
    used = set(_role_ids_in_template())
    for name, role_id in BUILT_IN_ROLES.items():
        if role_id in used:
            assert name in section, f"README roles table lacks {name}"


# --------------------------------------------------------------------------------- secrets


def test_nothing_secret_in_outputs_or_parameter_files() -> None:
    for path in BICEP_FILES:
        for output in bicep.declarations(bicep.parse(path), "output"):
            name, value = bicep.text(output.named_children[0]), bicep.text(output.named_children[-1])
            # Names of secrets are fine (``cacheKeySecretName``), values never.
            secretive = re.search(r"key|secret|token|password|connection", name, re.I)
            assert not secretive or name.lower().endswith("name"), f"{path.name}: output {name}"
            assert not re.search(r"listKeys|Token\b|connectionString|secret\(", value), f"{path.name}: {name}"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, entry in params.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[a-z]+)?\}", entry["value"]), f"{name}: only ${{ENV}} references"
    # Secure parameters carry @secure(); the cache key never leaves Key Vault.
    main = (INFRA / "main.bicep").read_text()
    assert re.search(r"@secure\(\)\n@description\([^\n]*\)\nparam eventGridWebhookToken string", main)
    keyvault = (INFRA / "app/keyvault.bicep").read_text()
    assert "listKeys()" in keyvault and "enableRbacAuthorization: true" in keyvault


def test_secret_settings_are_key_vault_references() -> None:
    function = (INFRA / "app/function.bicep").read_text()
    assert "'@Microsoft.KeyVault(VaultName=${vault};SecretName=${secret})'" in function
    for name in ("SLIPWAY_CACHE_ACCOUNT_KEY", "EVENTGRID_WEBHOOK_TOKEN"):
        assert re.search(rf"{name}: keyVaultReference\(", function), name


def test_funcignore_ships_only_the_app() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and line[0] != "#"
    }
    assert {".venv", "tests", "local.settings.json", "infra", "node_modules", "bench"} <= ignored
    for needed in ("function_app.py", "host.json", "requirements.txt", "shared", "handlers", "schemas"):
        assert needed not in ignored, needed


# --------------------------------------------------------------------------------- telemetry


def test_correlation_id_is_a_custom_dimension_in_application_insights() -> None:
    """What the worker does with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: the azure-monitor
    OpenTelemetry distro's logging handler, then the exporter's envelope (customDimensions)."""
    from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from shared.platform.logs import log_event

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = logging.getLogger("slipway.test_infra")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(logger, "run_started", correlation_id="delivery-1", request_id="web.abc", run_id="ca1")
    finally:
        logger.removeHandler(handler)
    [record] = memory.get_finished_logs()
    envelope: Any = _convert_log_to_envelope(record)
    dimensions = envelope.data.base_data.properties
    assert dimensions["correlation_id"] == "delivery-1"
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" in template_settings()
    assert re.search(r"^azure-monitor-opentelemetry==", (ROOT / "requirements.txt").read_text(), re.M)


@pytest.mark.parametrize("value", ["PT1M", "PT10M", "P7D", "PT1H30M"])
def test_iso_duration(value: str) -> None:
    assert iso_duration(value) > timedelta(0)
