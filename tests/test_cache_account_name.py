"""The cache's storage account name: derived from the config, passed to BuildKit, proven on Azurite.

BuildKit's azblob cache signs its requests (SharedKey) with an account name it takes from the
``account_name`` attribute, else from the first DNS label of ``account_url``'s host (moby/buildkit
``cache/remotecache/azblob/utils.go``, ``getConfig``, at 73ed6825; the attribute since v0.12.0,
commit ef0a352). For the README's local cache, Azurite's ``http://127.0.0.1:10000/devstoreaccount1``,
that label is ``127``. The end-to-end test runs the rendered build step, takes the ``--cache-to``
attributes buildx would get, and exports a cache into Azurite the way BuildKit does (re-implemented
below from ``utils.go`` and ``exporter.go``, layout as in tests/fixtures/buildkit-azblob-cache),
signing with the account those attributes give; the cache collector then reads it back.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.acr.run_prepare import prepare_run
from shared.acr.task import RenderError, RunSecrets, render_run
from shared.intake.routing import request_for_commit
from shared.model.build_request import BuildRequest, Trigger
from shared.model.config import ConfigError, SlipwayConfig, load_config, parse_config, storage_account_name
from shared.model.repo_urls import https_clone_url
from shared.pruning.cache_gc.layout import CacheLayout
from shared.pruning.cache_gc.planner import Policy
from shared.pruning.cache_gc.prune import collector_for
from tests.support.agent import Agent
from tests.support.azurite import AzuriteServer

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "c72d62bc4e992806a012ccaca139a8a6ef41a07c"


# --------------------------------------------------------------------------------------------
# What BuildKit does with the attributes (moby/buildkit cache/remotecache/azblob, at 73ed6825)


@dataclass(frozen=True)
class BuildkitAzblobConfig:
    account_url: str
    account_name: str
    container: str
    prefix: str
    manifests_prefix: str
    blobs_prefix: str
    names: list[str]
    secret_access_key: str


def buildkit_get_config(attrs: dict[str, str]) -> BuildkitAzblobConfig:
    """utils.go getConfig, without the BUILDKIT_AZURE_STORAGE_* environment fallbacks."""
    account_url = attrs["account_url"]
    account_name = attrs.get("account_name")
    if account_name is None:  # strings.Split(accountURL.Hostname(), ".")[0]
        account_name = (urlsplit(account_url).hostname or "").split(".")[0]
    return BuildkitAzblobConfig(
        account_url=account_url,
        account_name=account_name,
        container=attrs.get("container", "buildkit-cache"),
        prefix=attrs.get("prefix", ""),
        manifests_prefix=attrs.get("manifests_prefix", "manifests"),
        blobs_prefix=attrs.get("blobs_prefix", "blobs"),
        names=attrs["name"].split(";") if "name" in attrs else ["buildkit"],
        secret_access_key=attrs.get("secret_access_key", ""),
    )


def buildkit_export(config: BuildkitAzblobConfig, layers: list[bytes]) -> dict[str, str]:
    """exporter.go Finalize, with azure-storage-blob: SharedKey(account_name, key) on account_url.

    The container is created when missing (utils.go createContainerClient); each layer is uploaded
    only if absent, with If-None-Match: * (``overwrite=False``), at
    ``join(prefix, blobs_prefix, digest)``; then the cache config JSON is written (overwritten) at
    ``join(prefix, manifests_prefix, name)`` for every name. Returns {blob name: digest}.
    """
    credential = {"account_name": config.account_name, "account_key": config.secret_access_key}
    with BlobServiceClient(config.account_url, credential=credential) as service:
        container = service.get_container_client(config.container)
        try:
            container.get_container_properties()
        except ResourceNotFoundError:
            container.create_container()
        uploaded: dict[str, str] = {}
        entries = []
        for index, data in enumerate(layers):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            key = posixpath.join(config.prefix, config.blobs_prefix, digest)
            with contextlib.suppress(ResourceExistsError):  # BlobAlreadyExists counts as success
                container.get_blob_client(key).upload_blob(data, overwrite=False)
            uploaded[key] = digest
            entries.append(
                {
                    "blob": digest,
                    **({"parent": index - 1} if index else {}),
                    "annotations": {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "diffID": "sha256:" + hashlib.sha256(b"diff" + data).hexdigest(),
                        "size": len(data),
                        "createdAt": datetime.now(UTC).isoformat(),
                    },
                }
            )
        records = [{"digest": "sha256:" + "0" * 64, "layers": [{"layer": len(entries) - 1}]}]
        manifest = json.dumps({"layers": entries, "records": records}).encode()
        for name in config.names:
            key = posixpath.join(config.prefix, config.manifests_prefix, name)
            container.get_blob_client(key).upload_blob(manifest, overwrite=True)
    return uploaded


def cache_attributes(argv: list[str], option: str) -> dict[str, str]:
    """buildx's --cache-to/--cache-from value: one CSV record of key=value fields."""
    value = argv[argv.index(option) + 1]
    [fields] = list(csv.reader([value]))
    return dict(field.split("=", 1) for field in fields)


# --------------------------------------------------------------------------------------------
# The configuration


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://mycache.blob.core.windows.net", "mycache"),
        ("https://mycache.blob.core.chinacloudapi.cn", "mycache"),
        ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1"),  # Azurite, path-style
        ("https://10.1.2.3/mycache", "mycache"),  # a private endpoint by IP, path-style
        ("https://10.1.2.3", None),  # BuildKit would sign as "10"
        ("https://cache.example.com", None),  # a custom domain: BuildKit would sign as "cache"
        ("https://mycache.blob.core.windows.net/extra", None),  # the path would be the container
    ],
)
def test_the_account_a_url_names(url: str, name: str | None) -> None:
    assert storage_account_name(url) == name


def test_a_url_naming_no_account_needs_account_name() -> None:
    text = (
        "registry: r.azurecr.io\n"
        "cache:\n"
        "  account_url: https://cache.example.com\n"
        "targets: [{name: app, repo: https://github.com/o/r, image: team/app}]\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="slipway.yaml")
    assert "slipway.yaml:3" in str(info.value) and "cache.account_name" in str(info.value)
    config = parse_config(text.replace("example.com\n", "example.com\n  account_name: mycache\n"), source="s")
    assert config.cache is not None and config.cache.resolved_account_name == "mycache"


def test_a_model_built_without_validation_is_refused_at_render() -> None:
    config = load_config(ROOT / "examples" / "slipway.yaml")
    assert config.cache is not None
    unnamed = config.cache.model_construct(
        **{**dict(config.cache), "account_url": "https://cache.example.com"}
    )
    broken = config.model_copy(update={"cache": unnamed})
    request = _request(broken, "azure-test")
    with pytest.raises(RenderError) as info:
        render_run(request, broken, RunSecrets(cache_account_key="a2V5"))
    assert info.value.field == "cache.account_name"


def _request(config: SlipwayConfig, target_name: str) -> BuildRequest:
    target = config.target(target_name)
    assert target is not None
    trigger = Trigger(kind="manual", provider="cli", received_at=datetime.now(UTC), correlation_id="t")
    return request_for_commit(
        config,
        target,
        ref="refs/heads/master",
        commit=COMMIT,
        repo_url=https_clone_url(target.repo),
        trigger=trigger,
    )


def test_the_readme_local_example_passes_the_azurite_account() -> None:
    """examples/slipway.yaml (the README's local example): BuildKit alone would sign as "127"."""
    config = load_config(ROOT / "examples" / "slipway.yaml")
    assert config.cache is not None and config.cache.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    spec = prepare_run(_request(config, "azure-test"), config, config.targets[0], {}).spec
    build = spec.scripts["build.sh"]
    assert "account_name=devstoreaccount1," in build
    assert buildkit_get_config({"account_url": config.cache.account_url, "name": "x"}).account_name == "127"


# --------------------------------------------------------------------------------------------
# End to end on Azurite


def _config(azurite: AzuriteServer, container: str, prefix: str) -> SlipwayConfig:
    return SlipwayConfig.model_validate(
        {
            "registry": "slipway.azurecr.io",
            # The README's local example, on this Azurite's port.
            "cache": {"account_url": azurite.blob_endpoint, "container": container, "prefix": prefix},
            "targets": [
                {
                    "name": "app",
                    "repo": "https://github.com/o/r",
                    "image": "team/app",
                    "branches": ["master"],
                    "platforms": ["linux/amd64"],
                    "platform_check": False,
                }
            ],
        }
    )


@pytest.mark.parametrize("prefix", ["", "ci"])
def test_a_buildkit_export_with_the_rendered_attributes_reaches_the_collector(
    azurite: AzuriteServer, tmp_path: Path, prefix: str
) -> None:
    container = f"bk-{uuid.uuid4().hex[:12]}"
    config = _config(azurite, container, prefix)
    settings = {"SLIPWAY_CACHE_ACCOUNT_KEY": azurite.account_key}
    prepared = prepare_run(_request(config, "app"), config, config.targets[0], settings)
    assert prepared.missing == ()

    # The build step as the agent runs it: the key comes from the secrets volume at run time.
    agent = Agent(tmp_path)
    results = agent.run(prepared.spec)
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    build = next(c["argv"] for c in agent.docker_calls() if c["argv"][:2] == ["buildx", "build"])
    attrs = cache_attributes(build, "--cache-to")
    assert cache_attributes(build, "--cache-from")["account_name"] == attrs["account_name"]
    exported = buildkit_get_config(attrs)
    assert (exported.account_name, exported.secret_access_key) == (azurite.account_name, azurite.account_key)

    layers = [os.urandom(size) for size in (2048, 105, 110)]
    blobs = buildkit_export(exported, layers)
    [name] = exported.names
    assert name == "app-master"

    # The collector finds the manifest where BuildKit wrote it, and every blob it references live.
    collector = collector_for(
        config.cache,  # type: ignore[arg-type]
        {"SLIPWAY_CACHE_CONNECTION_STRING": azurite.connection_string},
        policy=Policy(grace=timedelta(hours=1), max_age=timedelta(days=1)),
    )
    report = collector.collect()
    assert report.complete and report.error is None, report.error
    assert [n.name for n in report.names] == [name]
    assert (report.manifests_kept, report.blobs_live, report.blobs_deleted) == (1, len(blobs), 0)
    layout = CacheLayout(prefix)
    assert sorted(blobs) == sorted(layout.blob_key(d) for d in blobs.values())


def test_without_account_name_buildkit_would_sign_as_127_and_azurite_refuses(azurite: AzuriteServer) -> None:
    attrs = {
        "account_url": azurite.blob_endpoint,
        "container": f"bk-{uuid.uuid4().hex[:12]}",
        "name": "app-master",
        "secret_access_key": azurite.account_key,
    }
    derived = buildkit_get_config(attrs)
    assert derived.account_name == "127"
    with pytest.raises(HttpResponseError) as info:
        buildkit_export(derived, [b"layer"])
    assert info.value.status_code == 403
    # The same export, signed as the account the rendered attributes name, succeeds.
    assert buildkit_export(buildkit_get_config({**attrs, "account_name": azurite.account_name}), [b"layer"])
