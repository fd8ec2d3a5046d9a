"""Render the ACR task (``acr-task.yaml``, ``version: v1.1.0``) that builds one BuildRequest.

The run is a quick run (``EncodedTaskRunRequest``) with up to three ``cmd`` steps, all using the
configured ``docker:<version>-cli`` image, which ships the buildx plugin:

1. ``binfmt`` (only for platforms the amd64 agent cannot run natively) registers QEMU emulators on
   the agent host through the mounted Docker socket. It runs before the builder starts because
   BuildKit probes the host's emulators once, when the daemon starts.
2. ``setup-builder`` creates the ``slipway`` buildx builder (``docker-container`` driver, pinned
   BuildKit image). Its state lands in the ``HOME=/acb/home`` volume that ACR shares between steps.
3. ``build`` runs ``docker buildx build`` on BuildKit's Git context of the exact commit, with the
   azblob cache and the target's SBOM/provenance attestations. A base-image or schedule build
   that knows no commit uses the ref instead (``<repo>.git#refs/heads/main``) and carries no
   revision label. It records the pushed digest in ``/workspace/slipway-run/digest`` (the
   workspace every step mounts) and prints ``<marker> pushed <repo>@<digest>``.

With a gate (the platform check, on by default, or a scan gate) the build pushes **by digest
only** and the release tags come last, each step waiting (``when``) on the one before:

4. ``platform-check`` inspects the pushed index and fails unless every requested platform is in it.
5. ``scan`` (scan gate) runs the scanner image itself (Trivy, pinned by digest) on the digest,
   once per platform, writing one JSON report per platform and the verdict to the workspace.
6. ``scan-gate`` (ORAS image) attaches the reports to the image as OCI referrers, then fails the
   run when the verdict is a failure: the reports are kept either way.
7. ``release-tags`` points the release tags at the same digest (``buildx imagetools create``), so
   no tag moves unless every gate step before it succeeded; nothing is rebuilt.

Lines starting with the run's marker (``slipway-result-<nonce>:``, random per claim, recorded in
the ledger; plain ``slipway-result:`` for ``slipway render``) are the run's report to
reconciliation (``shared.acr.run_report``), which reads them from the run log to name a failed gate
and to find the digests to lift from quarantine. Every value in them was validated here.

Why the task is shaped this way (reference: acr-tasks-buildkit-cache.md §1.5, acr-builder source):

* ACR runs a ``cmd`` step as ``/bin/sh -c "docker run ... <cmd text>"`` on the agent host, after
  rendering the whole YAML as a Go template and replacing ``$Alias`` words. So no value from
  outside ever appears in a ``cmd``: each one is the constant
  ``<docker_cli image> sh -eu /run/slipway/<step>.sh``, and the YAML contains no ``$`` and no
  ``{{`` except the secret placeholders below.
* The step scripts live in a task-level secret volume (``slipway``) mounted at ``/run/slipway``.
  ACR writes each file of a secret volume with ``/bin/sh -c "cat >> <dir>/<file> <<EOL
  <decoded value> EOL"`` (acr-builder ``createSecretFiles``): an *unquoted* here-document, so the
  agent's shell expands ``$(...)``, backquotes, ``$var`` and backslashes in the file content while
  writing it. A script holding a shell-quoted hostile ref such as ``'feat/$(reboot)'`` would run
  ``reboot`` on the agent before any step starts. Each volume file is therefore a small
  *launcher* made only of characters that survive the here-document (no ``$``, backquote or
  backslash, no ``EOL`` line): it decodes the real script from base64 and pipes it to ``sh -eu``
  inside the step container. The real scripts (``RunSpec.scripts``) re-validate nothing at run
  time that was known at render time: every external value was validated here against a strict
  grammar and is ``shlex.quote``-d into the script.
* Secrets never appear in the YAML. Each is a ``SetValue`` with ``isSecret: true`` holding the
  base64 of the secret (volume values must be base64), referenced only as a Go template
  placeholder (``{{.Values.slipwayCacheAccountKey}}``) inside a second secret volume,
  ``slipway-secrets``, mounted at ``/run/slipway-secrets``. Those files also pass through the
  here-document, so secrets are limited to alphabets without ``$``, backquote, backslash and
  quotes; the scripts read them with ``$(cat ...)``, which drops the newline ACR appends.

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

The Git token (``Target.git_token_setting``) reaches BuildKit as a build secret scoped to the
repository's host, which BuildKit's Git source uses for the context fetch: ``GIT_AUTH_TOKEN.<host>``
(BuildKit sends it with the user name ``x-access-token``), or for hosts that need another user name
(Bitbucket Cloud's ``x-token-auth``, ``Target.git_token_user``) ``GIT_AUTH_HEADER.<host>`` holding
the Basic header the step computes (``shared.model.git_auth`` has the sources). It is passed with
``env=`` rather than ``src=<file>`` because BuildKit uses the secret bytes verbatim and the file
ACR writes ends with a newline. The token is never in a URL.

The Dockerfile path is relative to the build context directory: with a Git context, BuildKit
reads ``--file`` inside the ``:<subdir>`` it checked out.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets as secrets_module
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from shared.model.build_request import (
    BUILD_ARG_NAME_RE,
    CACHE_NAME_RE,
    COMMIT_RE,
    HEAD_BUILD_TRIGGERS,
    OCI_REPOSITORY_RE,
    OCI_TAG_RE,
    PLATFORM_RE,
    REGISTRY_RE,
    REQUEST_ID_RE,
    BuildRequest,
)
from shared.model.config import STORAGE_ACCOUNT_NAME_RE, CacheStorage, SlipwayConfig, Target
from shared.model.git_auth import GIT_TOKEN_USER_RE, GitAuth, git_auth
from shared.model.supply_chain import ScanGate, is_secret_build_arg, sbom_flag
from shared.model.tool_images import resolve_tools

__all__ = [
    "SECRET_PLACEHOLDERS",
    "RenderError",
    "RunSecrets",
    "RunSpec",
    "RunValue",
    "new_result_marker",
    "render_run",
]

TASK_VERSION = "v1.1.0"
AGENT_OS = "Linux"
AGENT_ARCHITECTURE = "amd64"
BUILDER_NAME = "slipway"
SCRIPTS_VOLUME = "slipway"
SCRIPTS_DIR = "/run/slipway"
SECRETS_VOLUME = "slipway-secrets"
SECRETS_DIR = "/run/slipway-secrets"
STEP_BINFMT = "binfmt"
STEP_SETUP = "setup-builder"
STEP_BUILD = "build"
STEP_PLATFORM_CHECK = "platform-check"
STEP_SCAN = "scan"
STEP_SCAN_GATE = "scan-gate"
STEP_RELEASE_TAGS = "release-tags"
# Shared by all steps: ACR mounts the run's workspace at /workspace in every step container.
OUT_DIR = "/workspace/slipway-run"
RESULT_MARKER = "slipway-result:"
# A run's own marker: the default plus a random nonce the dispatcher keeps in the ledger. The step
# scripts (in a secret volume) print it; nothing the build runs can know it, so no output of the
# build can pass for a report line even if it reached column 0.
RESULT_MARKER_RE = re.compile(r"^slipway-result(?:-[0-9a-f]{16})?:$")
SCAN_REPORT_ARTIFACT_TYPE = "application/vnd.slipway.scan-report.trivy.v1+json"
# Trivy's exit code for findings at the gate's severities; any other failure is an error.
_SCAN_FINDINGS_EXIT = 3
# Prints each platform of an index as "os/arch[/variant] " (attestations show as unknown/unknown).
_INDEX_PLATFORMS_FORMAT = (
    "{{range .Manifest.Manifests}}{{with .Platform}}{{.OS}}/{{.Architecture}}"
    "{{with .Variant}}/{{.}}{{end}} {{end}}{{end}}"
)
_IMAGE_PLATFORM_FORMAT = "{{.Image.OS}}/{{.Image.Architecture}}{{with .Image.Variant}}/{{.}}{{end}}"
MIN_RUN_TIMEOUT = 300
MAX_RUN_TIMEOUT = 28800
# Builder setup and emulator registration pull one image each; the build gets the rest.
MIN_AUX_STEP_TIMEOUT = 60
MAX_AUX_STEP_TIMEOUT = 600
MIN_GATE_STEP_TIMEOUT = 30
REDACTED = "***"

# The delimiter acr-builder uses for the here-document that writes volume files.
_ACB_HEREDOC_DELIMITER = "EOL"
_LAUNCHER_DELIMITER = "SLIPWAY_SCRIPT"
# Characters the agent's shell would interpret inside that unquoted here-document.
_HEREDOC_ACTIVE = frozenset("$`\\")

# Secrets: the dispatcher's settings, checked here because they pass through the here-document
# above and (cache credentials) through buildx's comma-separated option parser.
_SAFE_PRINTABLE_CLASS = r"""[!#%&()*+\-./0-9:;<=>?@A-Z\[\]^_a-z{|}~]"""
_SECRET_TOKEN_RE = re.compile(rf"^{_SAFE_PRINTABLE_CLASS}{{1,4096}}$")
_ACCOUNT_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{4,1024}={0,2}$")
_DIRECTORY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_URL_SEGMENT = r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+"
_REPO_URL_RE = re.compile(rf"^https://{_HOST}(?::[0-9]{{1,5}})?(?:/{_URL_SEGMENT})+/?$")
_ACCOUNT_URL_RE = re.compile(rf"^https?://{_HOST}(?::[0-9]{{1,5}})?(?:/{_URL_SEGMENT})*/?$")
# Azure container names: 3-63 lowercase letters, digits and single hyphens.
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
_BLOB_PATH_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._@+-]+$")
_AGENT_POOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")
_IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_GIT_REF_FORBIDDEN = frozenset(" ~^:?*[\\")
# A ref that is itself the Git context's fragment (a head build): BuildKit splits the fragment at
# ":" (subdirectory) and Go's URL parser unescapes "%XX" in it, so only plain names are accepted.
_FRAGMENT_REF_RE = re.compile(r"^refs/(?:heads|tags)/[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*$")

# binfmt's --install names for the architectures of PLATFORM_RE.
_BINFMT_NAMES = {
    "arm64": "arm64",
    "arm": "arm",
    "386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class RenderError(ValueError):
    """A value that fails validation; the message starts with the field's name.

    The dispatcher dead-letters the request with this message, so it must say what to fix and
    must never quote a secret.
    """

    def __init__(self, field_name: str, problem: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {problem}")


@dataclass(frozen=True)
class RunSecrets:
    """Secrets the dispatcher resolved from app settings. ``repr`` shows only which are set."""

    cache_account_key: str | None = field(default=None, repr=False)
    cache_tenant_id: str | None = field(default=None, repr=False)
    cache_client_id: str | None = field(default=None, repr=False)
    cache_client_secret: str | None = field(default=None, repr=False)
    git_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        present = [slot.attr for slot in _SECRET_SLOTS if getattr(self, slot.attr)]
        return f"RunSecrets(set={present})"


@dataclass(frozen=True)
class RunValue:
    """One ``SetValue`` of the run. A secret's ``value`` is already base64 (volume content)."""

    name: str
    value: str = field(repr=False)
    is_secret: bool

    def __repr__(self) -> str:
        shown = REDACTED if self.is_secret else repr(self.value)
        return f"RunValue(name={self.name!r}, value={shown}, is_secret={self.is_secret})"


@dataclass(frozen=True)
class RunSpec:
    """Backend-neutral description of one ACR run: what the dispatcher sends and records."""

    task_yaml: str
    values: tuple[RunValue, ...]
    timeout: int
    os: str = AGENT_OS
    architecture: str = AGENT_ARCHITECTURE
    cpu: int = 2
    agent_pool: str | None = None
    # What the steps' report lines start with; the ledger keeps it for reading the run's log.
    result_marker: str = RESULT_MARKER
    # Decoded step scripts by file name, for humans (``runs show``, dry runs); never sent as such.
    scripts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def encoded_task_content(self) -> str:
        """``encodedTaskContent``: the YAML, base64-encoded as the API requires."""
        return base64.b64encode(self.task_yaml.encode("utf-8")).decode("ascii")

    def redacted(self) -> dict[str, object]:
        """The ``EncodedTaskRunRequest`` body with every secret value replaced by ``***``.

        Safe to log and to store: the YAML holds only placeholders for secrets.
        """
        request: dict[str, object] = {
            "type": "EncodedTaskRunRequest",
            "encodedTaskContent": self.encoded_task_content,
            "values": [
                {"name": v.name, "value": REDACTED if v.is_secret else v.value, "isSecret": v.is_secret}
                for v in self.values
            ],
            "timeout": self.timeout,
            "platform": {"os": self.os, "architecture": self.architecture},
            "agentConfiguration": {"cpu": self.cpu},
            "isArchiveEnabled": False,
        }
        if self.agent_pool is not None:
            request["agentPoolName"] = self.agent_pool
        return request


@dataclass(frozen=True)
class _SecretSlot:
    attr: str  # RunSecrets attribute
    value_name: str  # SetValue name, referenced as {{.Values.<name>}}
    file: str  # file name in the slipway-secrets volume
    pattern: re.Pattern[str]
    rule: str


_SECRET_SLOTS = (
    _SecretSlot(
        "cache_account_key",
        "slipwayCacheAccountKey",
        "cache-account-key",
        _ACCOUNT_KEY_RE,
        "must be base64 text (a storage account key)",
    ),
    _SecretSlot(
        "cache_tenant_id",
        "slipwayCacheTenantId",
        "cache-tenant-id",
        _DIRECTORY_ID_RE,
        "must be a tenant id or domain (letters, digits, '.', '-')",
    ),
    _SecretSlot(
        "cache_client_id",
        "slipwayCacheClientId",
        "cache-client-id",
        _DIRECTORY_ID_RE,
        "must be a client id (letters, digits, '.', '-')",
    ),
    _SecretSlot(
        "cache_client_secret",
        "slipwayCacheClientSecret",
        "cache-client-secret",
        _SECRET_TOKEN_RE,
        "must be printable ASCII without spaces, quotes, ',', '$', '`' or '\\'",
    ),
    _SecretSlot(
        "git_token",
        "slipwayGitToken",
        "git-token",
        _SECRET_TOKEN_RE,
        "must be printable ASCII without spaces, quotes, ',', '$', '`' or '\\'",
    ),
)
_SLOT = {slot.attr: slot for slot in _SECRET_SLOTS}
# What stands in for a secret whose setting is not set (``slipway render``, a dry run): each passes
# its slot's check, so the task keeps the shape a real run has. The key decodes to a note.
SECRET_PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "cache_account_key": base64.b64encode(b"slipway placeholder: no cache account key").decode(),
        "cache_tenant_id": "placeholder.invalid",
        "cache_client_id": "placeholder.invalid",
        "cache_client_secret": "slipway-placeholder",
        "git_token": "slipway-placeholder",
    }
)


# --------------------------------------------------------------------------------------------
# Validation: every value from a message or the configuration passes one of these before it
# reaches a script, an attribute list or the YAML.


def _match(field_name: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise RenderError(field_name, rule)
    return value


def _csv_value(field_name: str, value: str) -> str:
    """Refuse what would split or end a value in buildx's comma-separated attribute lists."""
    if any(c in value for c in ',;"\n\r'):
        raise RenderError(
            field_name,
            "must not contain ',', ';', '\"' or a line break (it goes into a BuildKit attribute list)",
        )
    return value


def _git_ref(field_name: str, value: str) -> str:
    """A full ref name that ``git check-ref-format`` accepts; anything legal is then only quoted."""
    problem = None
    if not isinstance(value, str) or not value.startswith("refs/") or len(value) > 1024:
        problem = "must be a full ref name such as refs/heads/main"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or any(c in _GIT_REF_FORBIDDEN for c in value):
        problem = "must not contain control characters, spaces or any of ~ ^ : ? * [ \\"
    elif (
        ".." in value
        or "@{" in value
        or "//" in value
        or value.endswith(("/", "."))
        or any(part.startswith(".") or part.endswith(".lock") for part in value.split("/"))
    ):
        problem = "is not a valid Git ref name"
    if problem:
        raise RenderError(field_name, problem)
    return value


def _repo_url(field_name: str, value: str) -> tuple[str, str]:
    """Return (the URL for the source label, the ``.git`` URL BuildKit treats as a Git context)."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise RenderError(field_name, "must be an https URL of printable ASCII")
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise RenderError(field_name, "must be an https URL")
    if "@" in parts.netloc:
        raise RenderError(
            field_name, "must not contain credentials (user:password@); use the target's git_token_setting"
        )
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise RenderError(field_name, "must not have a query or a fragment")
    if not _REPO_URL_RE.match(value):
        raise RenderError(
            field_name, "must be https://host[:port]/path with letters, digits and . _ ~ - in the path"
        )
    segments = parts.path.strip("/").split("/")
    if any(seg in (".", "..") for seg in segments):
        raise RenderError(field_name, "must not contain '.' or '..' path segments")
    base = value.rstrip("/")
    # BuildKit treats an https URL as a Git repository only when its path ends in ".git".
    git_url = base if base.endswith(".git") else base + ".git"
    return value, git_url


def _relative_path(field_name: str, value: str, *, allow_root: bool) -> str:
    """A path inside the repository: relative, no ``..``, a small character set."""
    if not isinstance(value, str):
        raise RenderError(field_name, "must be a relative path")
    text = value
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/") if text not in ("", "/") else text
    if text in ("", "."):
        if allow_root:
            return "."
        raise RenderError(field_name, "must name a file")
    if text.startswith("/"):
        raise RenderError(field_name, "must be a relative path (no leading '/')")
    if len(text) > 1024:
        raise RenderError(field_name, "is too long")
    for segment in text.split("/"):
        if segment in ("", ".", ".."):
            raise RenderError(field_name, "must not contain '..', '.' or empty path segments")
        if not _PATH_SEGMENT_RE.match(segment):
            raise RenderError(
                field_name, "may only contain letters, digits and . _ @ + - in each path segment"
            )
    return text


def _printable(field_name: str, value: str, *, limit: int) -> str:
    if not isinstance(value, str) or not value.isprintable() or "\x00" in value:
        raise RenderError(field_name, "must be printable text without line breaks or NUL")
    if len(value) > limit:
        raise RenderError(field_name, f"must be at most {limit} characters")
    return value


def _tool_image(field_name: str, value: str) -> str:
    """A pinned image reference: it is the one config value written into a ``cmd`` text."""
    found = _IMAGE_RE.match(value) if isinstance(value, str) else None
    if not found or len(value) > 512:
        raise RenderError(
            field_name, "must be an image reference such as docker.io/library/docker:29.7.2-cli"
        )
    tag, digest = found.group("tag"), found.group("digest")
    if digest is None and (tag is None or tag == "latest"):
        raise RenderError(field_name, "must be pinned to a version tag or a digest")
    return value


def _cache_storage(storage: CacheStorage) -> tuple[str, str, str, str]:
    account_url = _csv_value("cache.account_url", storage.account_url)
    if not _ACCOUNT_URL_RE.match(account_url):
        raise RenderError(
            "cache.account_url", "must be http(s)://host[:port][/path] without credentials or query"
        )
    try:
        account_name = storage.resolved_account_name
    except ValueError:
        raise RenderError(
            "cache.account_name", "is required: account_url does not name its storage account"
        ) from None
    _match(
        "cache.account_name",
        account_name,
        STORAGE_ACCOUNT_NAME_RE,
        "must be lowercase letters and digits, at most 24",
    )
    container = _csv_value("cache.container", storage.container)
    _match(
        "cache.container",
        container,
        _CONTAINER_RE,
        "must be 3-63 lowercase letters, digits and single hyphens",
    )
    prefix = _csv_value("cache.prefix", storage.prefix)
    if prefix:
        if len(prefix) > 512 or ".." in prefix.split("/"):
            raise RenderError("cache.prefix", "must be a blob path of at most 512 characters without '..'")
        _match(
            "cache.prefix",
            prefix,
            _BLOB_PATH_RE,
            "may only contain letters, digits and . _ - separated by '/'",
        )
    return account_url, account_name, container, prefix


def _secret(slot: _SecretSlot, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    # Never echo the value: the message ends up in dead-letter reasons and logs.
    if not slot.pattern.match(value) or value == _ACB_HEREDOC_DELIMITER:
        raise RenderError(f"secrets.{slot.attr}", slot.rule)
    return value


# --------------------------------------------------------------------------------------------
# Scripts


def _q(value: str) -> str:
    return shlex.quote(value)


def _arg(*words: str) -> str:
    """One ``set -- "$@" ...`` line: argv grows by quoted words and is never re-split."""
    return 'set -- "$@" ' + " ".join(_q(word) for word in words)


def _prelude(*, reads_secrets: bool) -> list[str]:
    lines = [
        "set -eu",
        "fail() { printf 'slipway: %s\\n' \"$1\" >&2; exit 1; }",
    ]
    if reads_secrets:
        # $(cat ...) drops the newline ACR appends to every volume file.
        lines += [
            f"secrets=${{SLIPWAY_SECRETS:-{SECRETS_DIR}}}",
            "read_secret() {",
            '  [ -s "$secrets/$1" ] || fail "$2 is missing ($secrets/$1): is its app setting set?"',
            '  cat "$secrets/$1"',
            "}",
        ]
    return [*lines, "set --"]


def _header(step: str, request: BuildRequest) -> list[str]:
    return [
        f"# Slipway step {step} for request {request.id} (generated by shared/acr/task/).",
        "# Every value below was validated when the task was rendered and is shell-quoted.",
    ]


def _binfmt_script(request: BuildRequest, binfmt_image: str, arches: list[str]) -> str:
    names = ",".join(arches)
    lines = [
        *_header(STEP_BINFMT, request),
        *_prelude(reads_secrets=False),
        f"printf 'slipway: registering QEMU emulators for %s\\n' {_q(names)}",
        f"docker run --privileged --rm {_q(binfmt_image)} --install {_q(names)} </dev/null",
    ]
    return "\n".join(lines) + "\n"


def _setup_script(request: BuildRequest, buildkit_image: str, use_sp: bool) -> str:
    lines = [
        *_header(STEP_SETUP, request),
        *_prelude(reads_secrets=use_sp),
        # A builder container left on a reused agent would keep its old environment; start clean.
        f"docker rm --force {_q(f'buildx_buildkit_{BUILDER_NAME}0')} >/dev/null 2>&1 </dev/null || true",
        _arg("--name", BUILDER_NAME, "--driver", "docker-container"),
        _arg("--driver-opt", f"image={buildkit_image}"),
    ]
    if use_sp:
        # DefaultAzureCredential in buildkitd reads these from its own environment.
        for slot_attr, env_name, what in (
            ("cache_tenant_id", "AZURE_TENANT_ID", "the cache tenant id"),
            ("cache_client_id", "AZURE_CLIENT_ID", "the cache client id"),
            ("cache_client_secret", "AZURE_CLIENT_SECRET", "the cache client secret"),
        ):
            lines += [
                f"value=$(read_secret {_q(_SLOT[slot_attr].file)} {_q(what)}) || exit 1",
                f'case $value in *[,\\"]*) fail {_q(what + " contains a comma or a quote")} ;; esac',
                f'set -- "$@" --driver-opt "env.{env_name}=$value"',
            ]
        lines.append("unset value")
    lines += [
        _arg("--bootstrap", "--use"),
        f"printf 'slipway: creating builder %s with %s\\n' {_q(BUILDER_NAME)} {_q(buildkit_image)}",
        'docker buildx create "$@" </dev/null',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Build:
    """The validated values of the build step."""

    request_id: str
    correlation_id: str
    ref: str
    commit: str | None  # None: the head of ``ref`` (base-image and schedule builds)
    source_label: str
    context: str
    dockerfile: str
    platforms: tuple[str, ...]
    images: tuple[str, ...]
    build_args: tuple[tuple[str, str], ...]
    cache_from: str | None
    cache_to: str | None
    cache_key: bool
    git_auth: GitAuth | None  # how the Git token reaches BuildKit; None: no token
    repository: str  # registry/repository, the name every digest is pushed under
    sbom: bool
    provenance: str  # off | min | max
    platform_check: bool
    scan: ScanGate | None
    marker: str = RESULT_MARKER  # printed before every report line (RESULT_MARKER_RE)
    sbom_generator: str = ""  # the generator image as the run pulls it (set with sbom)

    @property
    def gated(self) -> bool:
        """Push by digest and write the release tags only after the gate steps."""
        return self.platform_check or self.scan is not None


def _digest_functions() -> list[str]:
    """Shell helpers of the steps that pass the pushed digest on through the workspace."""
    return [
        f"out=${{SLIPWAY_OUT:-{OUT_DIR}}}",
        "valid_digest() {",
        "  case $1 in sha256:*) ;; *) return 1 ;; esac",
        "  hex=${1#sha256:}",
        '  [ "${#hex}" -eq 64 ] || return 1',
        "  case $hex in *[!0-9a-f]*) return 1 ;; esac",
        "}",
        "read_digest() {",
        '  digest=$(cat "$out/digest" 2>/dev/null) || fail "no digest from the build step ($out/digest)"',
        '  valid_digest "$digest" || fail "the recorded digest is not sha256:<64 hex digits>"',
        "}",
    ]


def _build_script(request: BuildRequest, b: _Build) -> str:
    lines = [
        *_header(STEP_BUILD, request),
        *_prelude(reads_secrets=b.cache_key or b.git_auth is not None),
        *_digest_functions(),
        'mkdir -p "$out"',
        'rm -f "$out/digest" "$out/build-metadata.json"',
        f"printf 'slipway: request %s, correlation %s\\n' {_q(b.request_id)} {_q(b.correlation_id)}",
        (
            f"printf 'slipway: building %s at %s\\n' {_q(b.ref)} {_q(b.commit)}"
            if b.commit
            else f"printf 'slipway: building the head of %s\\n' {_q(b.ref)}"
        ),
        _arg("--builder", BUILDER_NAME),
        _arg("--progress", "plain"),
        _arg("--platform", ",".join(b.platforms)),
        _arg("--file", b.dockerfile),
        _arg("--label", f"org.opencontainers.image.source={b.source_label}"),
        # The revision label names the commit; a head build does not know it, so it has none.
        *([_arg("--label", f"org.opencontainers.image.revision={b.commit}")] if b.commit else []),
        *(() if b.gated else (_arg("--tag", image) for image in b.images)),
        *(_arg("--build-arg", f"{name}={value}") for name, value in b.build_args),
        _arg(sbom_flag(b.sbom, b.sbom_generator)),
        _arg("--provenance=false" if b.provenance == "off" else f"--provenance=mode={b.provenance}"),
    ]
    if b.cache_from is not None and b.cache_to is not None:
        lines.append("cache_auth=")
        if b.cache_key:
            # BuildKit takes an account key only as the secret_access_key cache attribute.
            lines += [
                f"key=$(read_secret {_q(_SLOT['cache_account_key'].file)} 'the cache account key') || exit 1",
                "case $key in *[!A-Za-z0-9+/=]*) fail 'the cache account key is not base64 text' ;; esac",
                'cache_auth=",secret_access_key=$key"',
                "unset key",
            ]
        lines += [
            f"cache_from={_q(b.cache_from)}",
            f"cache_to={_q(b.cache_to)}",
            'set -- "$@" --cache-from "$cache_from$cache_auth"',
            'set -- "$@" --cache-to "$cache_to$cache_auth"',
        ]
    if b.git_auth is not None:
        read_token = f"$(read_secret {_q(_SLOT['git_token'].file)} 'the Git token') || exit 1"
        auth = b.git_auth
        if auth.user is None:  # BuildKit sends basic base64(x-access-token:<token>) itself
            lines.append(f"{auth.env}={read_token}")
        else:  # the host's own user name: the header, as BuildKit would build it for its own
            lines += [
                f"token={read_token}",
                f"{auth.env}=\"basic $(printf '%s:%s' {_q(auth.user)} \"$token\" | base64 | tr -d '\\n')\"",
                "unset token",
                f'[ "${auth.env}" != "basic " ] || fail "cannot encode the Git token (base64)"',
            ]
        lines += [f"export {auth.env}", _arg("--secret", f"id={auth.secret_id},env={auth.env}")]
    if b.gated:
        # No tag yet: the gate steps decide whether the release tags may point at this digest.
        output = f"type=image,name={b.repository},push-by-digest=true,name-canonical=true,push=true"
        lines.append(_arg("--output", output))
    else:
        lines.append(_arg("--push"))
    lines += [
        'set -- "$@" --metadata-file "$out/build-metadata.json"',
        'docker buildx build "$@" ' + _q(b.context) + " </dev/null",
        'digest=$(grep -o \'"containerimage.digest": *"sha256:[0-9a-f]*"\' "$out/build-metadata.json" '
        "| head -n 1 | sed 's/.*\"\\(sha256:[0-9a-f]*\\)\"/\\1/') || true",
        'valid_digest "$digest" || fail "buildx reported no image digest in its metadata file"',
        'printf \'%s\\n\' "$digest" > "$out/digest"',
        f"printf '{b.marker} pushed %s@%s\\n' {_q(b.repository)} \"$digest\"",
    ]
    return "\n".join(lines) + "\n"


def _platform_patterns(platform: str) -> str:
    """``case`` patterns matching ``platform`` in the space-separated list the inspection prints."""
    patterns = [f'*" "{_q(platform)}" "*']
    if platform == "linux/arm64":  # indexes may spell it with the default variant
        patterns.append('*" linux/arm64/v8 "*')
    return "|".join(patterns)


def _platform_check_script(request: BuildRequest, b: _Build) -> str:
    ref = f'{_q(b.repository)}@"$digest"'
    lines = [
        *_header(STEP_PLATFORM_CHECK, request),
        *_prelude(reads_secrets=False),
        *_digest_functions(),
        "read_digest",
        f"kind=$(docker buildx imagetools inspect --format '{{{{.Manifest.MediaType}}}}' {ref} </dev/null) "
        "|| fail 'platform check: cannot inspect the pushed image'",
        "case $kind in",
        f"  *index*|*manifest.list*) format={_q(_INDEX_PLATFORMS_FORMAT)} ;;",
        f"  *) format={_q(_IMAGE_PLATFORM_FORMAT)} ;;",
        "esac",
        f'found=$(docker buildx imagetools inspect --format "$format" {ref} </dev/null) '
        "|| fail 'platform check: cannot read the platforms of the pushed image'",
        "found=\" $(printf '%s' \"$found\" | tr -s ' \\n' '  ') \"",
        "missing=",
    ]
    for platform in b.platforms:
        lines.append(
            f'case $found in {_platform_patterns(platform)}) ;; *) missing="$missing "{_q(platform)} ;; esac'
        )
    lines += [
        'if [ -n "$missing" ]; then',
        f"  printf '{b.marker} platform-check failed missing%s\\n' \"$missing\"",
        '  fail "platform check: the pushed image lacks$missing (it has:$found)"',
        "fi",
        f"printf '{b.marker} platform-check passed\\n'",
    ]
    return "\n".join(lines) + "\n"


def _report_name(platform: str) -> str:
    return "scan-" + platform.replace("/", "-") + ".json"


def _scan_script(request: BuildRequest, b: _Build, scan: ScanGate) -> str:
    """Runs in the scanner image (its registry login is the run's, from ``HOME=/acb/home``)."""
    lines = [
        *_header(STEP_SCAN, request),
        *_prelude(reads_secrets=False),
        *_digest_functions(),
        "read_digest",
        'rm -f "$out/scan-verdict" "$out"/scan-*.json',
        "verdict=passed",
    ]
    severity = ",".join(scan.severity)
    for platform in b.platforms:
        report = _report_name(platform)
        argv = [
            "trivy", "image", "--quiet", "--no-progress", "--image-src", "remote", "--scanners", "vuln",
            "--platform", platform, "--severity", severity, "--exit-code", str(_SCAN_FINDINGS_EXIT),
            *(["--ignore-unfixed"] if scan.ignore_unfixed else []), "--format", "json",
        ]  # fmt: skip
        counts = " ".join(
            f'{name}=$(grep -o \'"Severity": *"{name}"\' "$out/{report}" | wc -l | tr -d \' \')'
            for name in scan.severity
        )
        lines += [
            "code=0",
            " ".join(_q(word) for word in argv)
            + f' --output "$out/{report}" {_q(b.repository)}@"$digest" </dev/null || code=$?',
            f'[ -s "$out/{report}" ] || fail {_q(f"the scanner wrote no report for {platform}")}',
            "case $code in",
            f"  0) printf '{b.marker} scan %s passed\\n' {_q(platform)} ;;",
            f"  {_SCAN_FINDINGS_EXIT}) verdict=failed; printf '{b.marker} scan %s failed %s\\n' "
            f'{_q(platform)} "{counts}" ;;',
            f'  *) fail "the scanner could not scan {platform} (exit $code)" ;;',
            "esac",
        ]
    lines.append('printf \'%s\\n\' "$verdict" > "$out/scan-verdict"')
    return "\n".join(lines) + "\n"


def _scan_gate_script(request: BuildRequest, b: _Build, scan: ScanGate) -> str:
    """Runs in the ORAS image: keeps the reports with the image, then enforces the verdict."""
    lines = [
        *_header(STEP_SCAN_GATE, request),
        *_prelude(reads_secrets=False),
        *_digest_functions(),
        "read_digest",
        'cd "$out"',
    ]
    for platform in b.platforms:
        report = _report_name(platform)
        argv = [
            "oras", "attach", "--artifact-type", SCAN_REPORT_ARTIFACT_TYPE,
            "--annotation", f"dev.slipway.platform={platform}",
            "--annotation", f"dev.slipway.request={request.id}",
        ]  # fmt: skip
        lines.append(
            " ".join(_q(word) for word in argv)
            + f' {_q(b.repository)}@"$digest" {_q(report + ":application/json")} </dev/null'
        )
    lines += [
        f"printf '{b.marker} scan-report stored %s\\n' {_q(SCAN_REPORT_ARTIFACT_TYPE)}",
        'verdict=$(cat "$out/scan-verdict" 2>/dev/null) || fail "the scan step left no verdict"',
        "case $verdict in",
        f"  passed) printf '{b.marker} scan-gate passed\\n' ;;",
        f"  failed) printf '{b.marker} scan-gate failed\\n'; "
        f"fail {_q('the scan gate failed: findings of ' + ', '.join(scan.severity) + ' severity')} ;;",
        '  *) fail "the scan verdict is unreadable" ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def _release_tags_script(request: BuildRequest, b: _Build) -> str:
    lines = [
        *_header(STEP_RELEASE_TAGS, request),
        *_prelude(reads_secrets=False),
        *_digest_functions(),
        "read_digest",
        *(_arg("--tag", image) for image in b.images),
        f'docker buildx imagetools create "$@" {_q(b.repository)}@"$digest" </dev/null',
        f"printf '{b.marker} tagged %s@%s\\n' {_q(b.repository)} \"$digest\"",
    ]
    return "\n".join(lines) + "\n"


def _launcher(name: str, script: str) -> str:
    """The volume file: survives ACR's unquoted here-document, decodes and runs ``script``."""
    encoded = base64.b64encode(script.encode("utf-8")).decode("ascii")
    chunks = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    text = "\n".join(
        [
            f"# Slipway {name}: launcher generated by shared/acr/task/. ACR writes volume files",
            "# through an unquoted shell here-document, so this file has no dollar sign, backquote or",
            "# backslash: the script is the base64 text below, decoded and run by sh in the step.",
            f"export SLIPWAY_SECRETS={SECRETS_DIR}",
            f"base64 -d <<'{_LAUNCHER_DELIMITER}' | sh -eu",
            *chunks,
            _LAUNCHER_DELIMITER,
            "",
        ]
    )
    if _HEREDOC_ACTIVE & set(text) or _ACB_HEREDOC_DELIMITER in text.splitlines():
        raise AssertionError(f"launcher for {name} would be altered by ACR's here-document")
    return text


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------------------------
# Rendering


def _step_timeouts(run_timeout: int, aux_steps: int) -> tuple[int, int]:
    """(each auxiliary step, the build step); their sum is the run timeout."""
    aux = min(MAX_AUX_STEP_TIMEOUT, max(MIN_AUX_STEP_TIMEOUT, run_timeout // 12))
    if aux * aux_steps > run_timeout // 2:  # many gate steps in a short run: the build keeps half
        aux = max(MIN_GATE_STEP_TIMEOUT, run_timeout // (2 * aux_steps))
    return aux, run_timeout - aux * aux_steps


def _platforms(values: Iterable[str]) -> tuple[str, ...]:
    seen: list[str] = []
    for platform in values:
        _match("platforms", platform, PLATFORM_RE, f"{platform!r} is not os/arch[/variant]")
        if not platform.startswith("linux/"):
            raise RenderError(
                "platforms", f"{platform} cannot be built: the BuildKit builder runs on a Linux agent"
            )
        if platform not in seen:
            seen.append(platform)
    if not seen:
        raise RenderError("platforms", "at least one platform is required")
    return tuple(seen)


def _foreign_arches(platforms: Iterable[str]) -> list[str]:
    arches: list[str] = []
    for platform in platforms:
        arch = platform.split("/")[1]
        if arch != AGENT_ARCHITECTURE and _BINFMT_NAMES[arch] not in arches:
            arches.append(_BINFMT_NAMES[arch])
    return arches


def _commit(request: BuildRequest) -> str | None:
    """The commit to build, or None for the ref's head, which only some triggers may ask for."""
    if request.source.commit is None:
        if request.trigger.kind not in HEAD_BUILD_TRIGGERS:
            raise RenderError(
                "source.commit",
                f"is required for a {request.trigger.kind} build (only base-image and "
                "schedule builds may build a ref's head)",
            )
        return None
    return _match("source.commit", request.source.commit, COMMIT_RE, "must be a full lowercase hex commit id")


def _validate_build(
    request: BuildRequest, config: SlipwayConfig, secrets: RunSecrets, target: Target
) -> _Build:
    _match("id", request.id, REQUEST_ID_RE, "must match [a-z0-9][a-z0-9.-]*")
    correlation_id = _printable("trigger.correlation_id", request.trigger.correlation_id, limit=256)
    ref = _git_ref("source.ref", request.source.ref)
    commit = _commit(request)
    source_label, git_url = _repo_url("source.repo_url", request.source.repo_url)
    context_dir = _relative_path("source.context", request.source.context, allow_root=True)
    dockerfile = _relative_path("source.dockerfile", request.source.dockerfile, allow_root=False)
    if commit is None and not _FRAGMENT_REF_RE.match(ref):
        raise RenderError(
            "source.ref",
            "a head build needs a branch or tag name of letters, digits and . _ @ + - / "
            "(it is the Git context's fragment); build a commit instead",
        )
    context = f"{git_url}#{commit or ref}" + ("" if context_dir == "." else f":{context_dir}")

    registry = _match(
        "image.registry", request.image.registry, REGISTRY_RE, "must be a registry login server"
    )
    repository = _match(
        "image.repository",
        request.image.repository,
        OCI_REPOSITORY_RE,
        "must match the OCI repository grammar",
    )
    if not request.image.tags:
        raise RenderError("image.tags", "at least one tag is required")
    images: list[str] = []
    for tag in request.image.tags:
        _match("image.tags", tag, OCI_TAG_RE, f"{tag!r} does not match the OCI tag grammar")
        image = f"{registry}/{repository}:{tag}"
        if image not in images:
            images.append(image)

    build_args: list[tuple[str, str]] = []
    for name, value in request.build_args.items():
        _match("build_args", name, BUILD_ARG_NAME_RE, f"{name!r} is not a valid build arg name")
        build_args.append((name, _printable(f"build_args.{name}", value, limit=8192)))

    if target.git_token_user is not None:
        _match("git_token_user", target.git_token_user, GIT_TOKEN_USER_RE, "must be a user name without ':'")
    cache_from = cache_to = None
    use_key = False
    if config.cache is not None:
        account_url, account_name, container, prefix = _cache_storage(config.cache)
        names = [request.cache.name, *request.cache.from_names]
        for index, name in enumerate(names):
            where = "cache.name" if index == 0 else "cache.from_names"
            _csv_value(where, name)
            _match(where, name, CACHE_NAME_RE, "must match [A-Za-z0-9][A-Za-z0-9._-]*")
        if request.cache.mode not in ("min", "max"):
            raise RenderError("cache.mode", "must be min or max")
        unique_names = list(dict.fromkeys(names))
        common = [
            "type=azblob",
            f"account_url={account_url}",
            # Always given: BuildKit would otherwise sign as the host's first label (see config.py).
            f"account_name={account_name}",
            f"container={container}",
            *([f"prefix={prefix}"] if prefix else []),
        ]
        cache_from = ",".join([*common, f"name={';'.join(unique_names)}"])
        cache_to = ",".join(
            [*common, f"name={request.cache.name}", f"mode={request.cache.mode}", "ignore-error=true"]
        )
        use_key = config.cache.auth == "account-key"

    return _Build(
        request_id=request.id,
        correlation_id=correlation_id,
        ref=ref,
        commit=commit,
        source_label=source_label,
        context=context,
        dockerfile=dockerfile,
        platforms=_platforms(request.platforms),
        images=tuple(images),
        build_args=tuple(build_args),
        cache_from=cache_from,
        cache_to=cache_to,
        cache_key=use_key,
        git_auth=git_auth(git_url, target.git_token_user) if secrets.git_token else None,
        repository=f"{registry}/{repository}",
        sbom=target.attestations.sbom,
        provenance=_provenance(target, build_args),
        platform_check=target.platform_check,
        scan=target.scan,
    )


def _provenance(target: Target, build_args: list[tuple[str, str]]) -> str:
    """The config refuses max next to a secret-looking build arg; a request's own args are checked too."""
    mode = target.attestations.provenance
    if mode not in ("off", "min", "max"):
        raise RenderError("attestations.provenance", "must be off, min or max")
    secret = [name for name, _value in build_args if is_secret_build_arg(name)]
    if mode == "max" and secret:
        raise RenderError(
            "attestations.provenance",
            f"max would record the values of build_args {', '.join(secret)} in the image; use min",
        )
    return mode


def _target(request: BuildRequest, config: SlipwayConfig) -> Target:
    """The request's target; one no longer configured builds with the defaults (gates on)."""
    found = config.target(request.target)
    if found is not None:
        return found
    return Target.model_construct(
        name=request.target, repo=request.source.repo_url, image=request.image.repository
    )


def new_result_marker() -> str:
    """A marker for one run's report lines: ``slipway-result-<16 hex>:``, random."""
    return f"slipway-result-{secrets_module.token_hex(8)}:"


def render_run(
    request: BuildRequest, config: SlipwayConfig, secrets: RunSecrets, *, result_marker: str = RESULT_MARKER
) -> RunSpec:
    """Validate everything again and render the run. Raises ``RenderError`` naming the field.

    The BuildRequest was validated when parsed, but a message can be edited and re-sent from the
    portal and a model can be built without validation; this is the last gate before a shell.
    ``result_marker`` starts the report lines the steps print (the dispatcher passes a random
    one per claim and records it; ``slipway render`` shows the plain default).
    """
    _match("result_marker", result_marker, RESULT_MARKER_RE, "must be slipway-result[-<16 hex>]:")
    tools = resolve_tools(config)  # each as a run pulls it: from tools.mirror when one is set
    docker_cli = _tool_image("tools.docker_cli", tools["docker_cli"].pulled)
    buildkit = _csv_value("tools.buildkit", _tool_image("tools.buildkit", tools["buildkit"].pulled))
    binfmt = _tool_image("tools.binfmt", tools["binfmt"].pulled)
    run_timeout = config.run.timeout
    if not isinstance(run_timeout, int) or not MIN_RUN_TIMEOUT <= run_timeout <= MAX_RUN_TIMEOUT:
        raise RenderError("run.timeout", f"must be {MIN_RUN_TIMEOUT}..{MAX_RUN_TIMEOUT} seconds")
    if not isinstance(config.run.cpu, int) or config.run.cpu < 1:
        raise RenderError("run.cpu", "must be a positive integer")
    if config.run.agent_pool is not None:
        _match("run.agent_pool", config.run.agent_pool, _AGENT_POOL_RE, "must be an agent pool name")

    target = _target(request, config)
    build = dataclasses.replace(_validate_build(request, config, secrets, target), marker=result_marker)
    if build.sbom:
        generator = tools["sbom_generator"].pulled
        generator = _csv_value("tools.sbom_generator", _tool_image("tools.sbom_generator", generator))
        build = dataclasses.replace(build, sbom_generator=generator)
    scanner = oras = None
    if build.scan is not None:
        if not config.scanner.image or "@sha256:" not in config.scanner.image:
            raise RenderError("scanner.image", "a scan gate needs a scanner image pinned by digest")
        scanner = _tool_image("scanner.image", tools["scanner"].pulled)
        oras = _tool_image("tools.oras", tools["oras"].pulled)

    # Secrets the run needs, in the order of _SECRET_SLOTS.
    wanted: set[str] = set()
    if config.cache is not None:
        if config.cache.auth == "account-key":
            wanted.add("cache_account_key")
        else:
            wanted |= {"cache_tenant_id", "cache_client_id", "cache_client_secret"}
    if build.git_auth is not None:
        wanted.add("git_token")
    present: list[tuple[_SecretSlot, str]] = []
    for slot in _SECRET_SLOTS:
        if slot.attr in wanted:
            value = _secret(slot, getattr(secrets, slot.attr))
            if value is not None:
                present.append((slot, value))
    use_sp = config.cache is not None and config.cache.auth == "service-principal"

    arches = _foreign_arches(build.platforms)
    scripts: dict[str, str] = {}
    if arches:
        scripts[f"{STEP_BINFMT}.sh"] = _binfmt_script(request, binfmt, arches)
    scripts[f"{STEP_SETUP}.sh"] = _setup_script(request, buildkit, use_sp)
    scripts[f"{STEP_BUILD}.sh"] = _build_script(request, build)
    # (step id, image, entry point, waits for): the gate steps, each after the one before it.
    gates: list[tuple[str, str, str | None, list[str]]] = []
    if build.platform_check:
        scripts[f"{STEP_PLATFORM_CHECK}.sh"] = _platform_check_script(request, build)
        gates.append((STEP_PLATFORM_CHECK, docker_cli, None, [STEP_BUILD]))
    if build.scan is not None and scanner is not None and oras is not None:
        scripts[f"{STEP_SCAN}.sh"] = _scan_script(request, build, build.scan)
        scripts[f"{STEP_SCAN_GATE}.sh"] = _scan_gate_script(request, build, build.scan)
        gates.append((STEP_SCAN, scanner, "sh", [gates[-1][0] if gates else STEP_BUILD]))
        gates.append((STEP_SCAN_GATE, oras, "sh", [STEP_SCAN]))
    if build.gated:
        scripts[f"{STEP_RELEASE_TAGS}.sh"] = _release_tags_script(request, build)
        # Every gate step is named, not only the last: no tag without all of them succeeding.
        gates.append((STEP_RELEASE_TAGS, docker_cli, None, [step_id for step_id, *_ in gates]))

    aux_timeout, build_timeout = _step_timeouts(run_timeout, len(scripts) - 1)
    scripts_mount = {"name": SCRIPTS_VOLUME, "mountPath": SCRIPTS_DIR}
    secrets_mount = {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR}

    def step(
        step_id: str,
        timeout: int,
        needs_secrets: bool,
        *,
        image: str = docker_cli,
        entry_point: str | None = None,
        when: list[str] | None = None,
    ) -> dict[str, object]:
        mounts = [scripts_mount, *([secrets_mount] if needs_secrets and present else [])]
        # An image whose entry point is its tool (trivy, oras) runs the script with entryPoint sh.
        shell = "" if entry_point else "sh "
        rendered: dict[str, object] = {"id": step_id}
        if when is not None:
            rendered["when"] = list(when)
        if entry_point is not None:
            rendered["entryPoint"] = entry_point
        rendered |= {
            "cmd": f"{image} {shell}-eu {SCRIPTS_DIR}/{step_id}.sh",
            "timeout": timeout,
            "volumeMounts": [dict(m) for m in mounts],
        }
        return rendered

    steps: list[dict[str, object]] = []
    if arches:
        steps.append(step(STEP_BINFMT, aux_timeout, needs_secrets=False))
    steps.append(step(STEP_SETUP, aux_timeout, needs_secrets=use_sp))
    steps.append(step(STEP_BUILD, build_timeout, needs_secrets=True))
    for step_id, image, entry_point, when in gates:
        steps.append(step(step_id, aux_timeout, False, image=image, entry_point=entry_point, when=when))

    volumes: list[dict[str, object]] = [
        {
            "name": SCRIPTS_VOLUME,
            "secret": {name: _b64(_launcher(name, text)) for name, text in scripts.items()},
        }
    ]
    if present:
        volumes.append(
            {
                "name": SECRETS_VOLUME,
                "secret": {slot.file: f"{{{{.Values.{slot.value_name}}}}}" for slot, _ in present},
            }
        )

    task: dict[str, object] = {
        "version": TASK_VERSION,
        "stepTimeout": aux_timeout,
        "volumes": volumes,
        "steps": steps,
    }
    task_yaml = dump_task(task)
    _check_task_text(task_yaml, [slot.value_name for slot, _ in present])

    values = tuple(RunValue(slot.value_name, _b64(value), is_secret=True) for slot, value in present)
    return RunSpec(
        task_yaml=task_yaml,
        values=values,
        timeout=run_timeout,
        os=AGENT_OS,
        architecture=AGENT_ARCHITECTURE,
        cpu=config.run.cpu,
        agent_pool=config.run.agent_pool,
        result_marker=result_marker,
        scripts=MappingProxyType(scripts),
    )


_PLACEHOLDER_RE = re.compile(r"\{\{\.Values\.([A-Za-z0-9]+)\}\}")


# PyYAML's C emitter (libyaml, shipped in PyYAML's wheels) writes the same text as its pure-Python
# emitter about 20 times faster; the pure one was half of a dispatch's CPU. tests/test_task_render.py
# holds the two byte-identical over rendered tasks; a PyYAML built without libyaml falls back.
_TASK_DUMPER: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_task(task: Mapping[str, object], *, dumper: type[Any] | None = None) -> str:
    """The task as YAML: keys in insertion order, block style, no line folding."""
    return yaml.dump(
        task, Dumper=dumper or _TASK_DUMPER, sort_keys=False, default_flow_style=False, width=1 << 20
    )


def _check_task_text(task_yaml: str, placeholders: list[str]) -> None:
    """The YAML is rendered as a Go template and scanned for ``$Alias`` words before parsing."""
    if not task_yaml.startswith(f"version: {TASK_VERSION}\n"):
        raise AssertionError("the task must start with its version line")
    if "$" in task_yaml:
        raise AssertionError("the task text must not contain '$' (ACR alias expansion)")
    remainder = _PLACEHOLDER_RE.sub("", task_yaml)
    if "{{" in remainder or "}}" in remainder:
        raise AssertionError("the task text must contain no template action but the secret placeholders")
    if sorted(_PLACEHOLDER_RE.findall(task_yaml)) != sorted(placeholders):
        raise AssertionError("secret placeholders do not match the secret values")
