"""What a rendered run is: the ``RunSpec`` the dispatcher sends and records, and the task's constants.

The step names, volumes, workspace and report marker are shared by the step scripts
(``scripts``, ``gate_scripts``), the task assembly (``render``) and the modules that read a run's
log (``shared.acr.run_report``, ``shared.runs.run_outcome``), so they live here, with no logic.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

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
MIN_RUN_TIMEOUT = 300
MAX_RUN_TIMEOUT = 28800
# Builder setup and emulator registration pull one image each; the build gets the rest.
MIN_AUX_STEP_TIMEOUT = 60
MAX_AUX_STEP_TIMEOUT = 600
MIN_GATE_STEP_TIMEOUT = 30
REDACTED = "***"

# The delimiter acr-builder uses for the here-document that writes volume files.
ACB_HEREDOC_DELIMITER = "EOL"


class RenderError(ValueError):
    """A value that fails validation; the message starts with the field's name.

    The dispatcher dead-letters the request with this message, so it must say what to fix and
    must never quote a secret.
    """

    def __init__(self, field_name: str, problem: str) -> None:
        self.field = field_name
        super().__init__(f"{field_name}: {problem}")


@dataclass(frozen=True)
class RunValue:
    """One ``SetValue`` of the run. A secret's ``value`` is already base64 (volume content)."""

    name: str
    value: str = field(repr=False)
    is_secret: bool

    def __repr__(self) -> str:
        shown = REDACTED if self.is_secret else repr(self.value)
        return f"RunValue(name={self.name!r}, value={shown}, is_secret={self.is_secret})"


# ``credentials`` of a run request (api 2025-03-01-preview, azure-rest-api-specs
# specification/containerregistry/resource-manager/Microsoft.ContainerRegistry/RegistryTasks/preview/
# 2025-03-01-preview/containerregistry_build.json, definitions Credentials,
# SourceRegistryCredentials, CustomRegistryCredentials, SecretObject): ``sourceRegistry.loginMode``
# is "None" or "Default", "the authentication mode which determines the source registry login
# scope. The credentials for the source registry will be generated using the given scope";
# ``customRegistries`` maps a login server to ``userName``/``password`` SecretObjects, whose type
# "Opaque" means "the value will be used as is without any modification".
SourceLoginMode = Literal["None", "Default"]
SECRET_OBJECT_OPAQUE = "Opaque"


@dataclass(frozen=True)
class RegistryLogin:
    """A registry login the run request carries (``credentials.customRegistries``); never in the YAML."""

    login_server: str
    user_name: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        server, user = self.login_server, self.user_name
        return f"RegistryLogin(login_server={server!r}, user_name={user!r}, password={REDACTED})"


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
    # None: no ``credentials`` in the request (ACR logs the run in to its registry, loginMode
    # Default). A fork pull request's run: "None", with at most the fork's own registry token.
    source_login_mode: SourceLoginMode | None = None
    registry_logins: tuple[RegistryLogin, ...] = ()

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
        if self.source_login_mode is not None or self.registry_logins:
            request["credentials"] = self._redacted_credentials()
        return request

    def _redacted_credentials(self) -> dict[str, object]:
        """``credentials`` as the REST API spells it, every password ``***``."""
        body: dict[str, object] = {}
        if self.source_login_mode is not None:
            body["sourceRegistry"] = {"loginMode": self.source_login_mode}
        if self.registry_logins:
            body["customRegistries"] = {
                login.login_server: {
                    "userName": {"type": SECRET_OBJECT_OPAQUE, "value": login.user_name},
                    "password": {"type": SECRET_OBJECT_OPAQUE, "value": REDACTED},
                }
                for login in self.registry_logins
            }
        return body


def new_result_marker() -> str:
    """A marker for one run's report lines: ``slipway-result-<16 hex>:``, random."""
    return f"slipway-result-{secrets.token_hex(8)}:"
