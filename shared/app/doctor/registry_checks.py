"""The doctor's checks of the registry: ACR runs can be listed, and the mirrored tool images a
real run pulls are there."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from shared.app.doctor.report import Failed, Status
from shared.app.runtime import acr_configured

if TYPE_CHECKING:
    from shared.app.doctor.core import Doctor

RUNS_WINDOW = timedelta(hours=24)


def check_registry(doc: Doctor) -> tuple[Status, str] | str:
    if not acr_configured(doc.settings):
        return Status.SKIP, "ACR settings not set: dispatch is a dry run"
    from shared.acr.run_backend import PermanentBackendError, TransientBackendError

    registry = doc.settings["ACR_NAME"]
    now = doc.clock()
    try:
        runs = doc.backend().list_runs(created_from=now - RUNS_WINDOW, created_to=now)
    except (PermanentBackendError, TransientBackendError) as exc:
        raise Failed(
            f"registry {registry!r}: runs.list: {exc}",
            f"check ACR_SUBSCRIPTION_ID, ACR_RESOURCE_GROUP, ACR_NAME; grant the identity "
            f"Container Registry Tasks Contributor on {registry}",
        ) from exc
    return f"registry {registry!r}: runs listable ({len(runs)} quick run(s) in the last 24 h)"


def check_tools(doc: Doctor) -> tuple[Status, str] | str:
    """Every tool image a real run pulls from the mirror is there (the azd hook imports them)."""
    if doc.config is None:
        return Status.SKIP, "the configuration did not load"
    if not acr_configured(doc.settings):
        return Status.SKIP, "ACR settings not set: dispatch is a dry run, which pulls nothing"
    from shared.model.tool_images import mirror_prefix, resolve_tools
    from shared.platform.oci import NotFound, RegistryError, parse_reference

    mirrored = [tool for tool in resolve_tools(doc.config).values() if tool.import_source is not None]
    if not mirrored:
        return Status.SKIP, "tools.mirror is off or not the registry: runs pull the tool images upstream"
    if doc.registry_clients is not None:
        client_for = doc.registry_clients(doc.settings)
    else:
        from shared.intake.digest_poll import registry_clients

        client_for = registry_clients(doc.settings)
    missing: list[str] = []
    failed: list[str] = []
    for tool in mirrored:
        reference = parse_reference(tool.pulled)
        try:
            client_for(reference.registry).resolve_digest(reference)
        except NotFound:
            missing.append(tool.pulled)
        except RegistryError as exc:
            failed.append(f"{tool.pulled}: {exc}")
    mirror = mirror_prefix(doc.config)
    if missing:
        raise Failed(
            f"{len(missing)} of {len(mirrored)} tool image(s) missing in {mirror}: {', '.join(missing)}",
            "run infra/hooks/import-tools.sh (azd provision runs it), or set tools.mirror: null "
            "to pull them upstream",
        )
    if failed:
        raise Failed(
            f"the tool images in {mirror} cannot be read: {'; '.join(failed[:3])}",
            "grant the identity AcrPull on the registry",
        )
    return f"{len(mirrored)} tool image(s) present in {mirror}"
