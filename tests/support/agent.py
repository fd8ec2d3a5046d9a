"""Just enough of acr-builder to run a rendered ACR task on this machine, with fake tools.

The task renderer's tests and the end-to-end tests run the very scripts a run would run: volume
files written through the agent's unquoted here-document, each step's launcher under a POSIX
shell, and fake ``docker``/``trivy``/``oras`` that record their arguments and answer like the real
tools. Tools a hostile value might try to call (``touch``, ``id``, ``reboot``...) leave a mark.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from shared.acr.task import RunSpec
from shared.model.config import ToolImages

DOCKER_CLI = ToolImages().docker_cli

FAKE_DOCKER = """#!{python}
import json, os, sys
argv = sys.argv[1:]
tool = os.path.basename(sys.argv[0])
record = {{"tool": tool, "argv": argv, "git_auth_token": os.environ.get("GIT_AUTH_TOKEN")}}
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
if tool == "docker" and argv[:2] == ["buildx", "build"] and "--metadata-file" in argv:
    with open(argv[argv.index("--metadata-file") + 1], "w") as out:
        json.dump({{"containerimage.digest": os.environ["FAKE_DIGEST"], "image.name": "x"}}, out, indent=2)
if tool == "docker" and argv[:3] == ["buildx", "imagetools", "inspect"]:
    fmt = argv[argv.index("--format") + 1]
    print(os.environ["FAKE_MEDIA_TYPE"] if "MediaType" in fmt else os.environ["FAKE_PLATFORMS"])
if tool == "trivy":
    with open(argv[argv.index("--output") + 1], "w") as out:
        out.write(os.environ["FAKE_TRIVY_REPORT"])
    sys.exit(int(os.environ["FAKE_TRIVY_EXIT"]))
"""
FAKE_DIGEST = "sha256:" + "d" * 64


def _is_docker_cli(image: str) -> bool:
    """The default Docker CLI image, upstream or from a ``tools.mirror`` (``<prefix>/<upstream>``)."""
    return image == DOCKER_CLI or image.endswith("/" + DOCKER_CLI)


INDEX = "application/vnd.oci.image.index.v1+json"


class Agent:
    """Just enough of acr-builder to run a rendered task locally with fake tools."""

    def __init__(self, root: Path, *, shell: str = "sh") -> None:
        self.root = root
        # "sh" inside the step image: the launcher pipes into "sh", so point that name at the shell.
        self.shell = ["busybox", "sh"] if shell == "busybox" else [shell]
        self.bin = root / "bin"
        self.bin.mkdir()
        self.workspace = root / "workspace"
        self.workspace.mkdir()
        self.docker_log = root / "docker.jsonl"
        self.executed = root / "executed"  # written by fake tools a hostile value could call
        for tool in ("docker", "trivy", "oras"):
            (self.bin / tool).write_text(FAKE_DOCKER.format(python=sys.executable))
        for tool in ("reboot", "id", "curl", "whoami", "touch"):
            (self.bin / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{self.executed}"\n')
        shell_path = shutil.which(self.shell[0])
        assert shell_path is not None
        (self.bin / "sh").write_text(f'#!/bin/sh\nexec {" ".join([shell_path, *self.shell[1:]])} "$@"\n')
        for path in self.bin.iterdir():
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(root),
            "FAKE_DOCKER_LOG": str(self.docker_log),
            "LC_ALL": "C",
            # What ACR mounts at /workspace in every step, and what the fake tools answer.
            "SLIPWAY_OUT": str(self.workspace / "slipway-run"),
            "FAKE_DIGEST": FAKE_DIGEST,
            "FAKE_MEDIA_TYPE": INDEX,
            "FAKE_PLATFORMS": "linux/amd64 linux/arm64 unknown/unknown unknown/unknown",
            "FAKE_TRIVY_REPORT": '{"Results": []}',
            "FAKE_TRIVY_EXIT": "0",
        }

    def write_volume_file(self, volume: str, name: str, b64value: str) -> None:
        """acr-builder createSecretFiles: decode, then an unquoted here-document in /bin/sh."""
        (self.workspace / volume).mkdir(exist_ok=True)
        decoded = base64.b64decode(b64value).decode()
        command = f"cat >> {volume}/{name} <<EOL\n{decoded}\nEOL"
        subprocess.run(["/bin/sh", "-c", command], cwd=self.workspace, env=self.env, check=True, timeout=30)

    def run(self, spec: RunSpec) -> dict[str, subprocess.CompletedProcess[str]]:
        return self.run_task(spec.task_yaml, ((v.name, v.value) for v in spec.values))

    def run_task(
        self, task_yaml: str, values: Iterable[tuple[str, str]]
    ) -> dict[str, subprocess.CompletedProcess[str]]:
        """Run a task as sent to ACR: its YAML and the run request's values."""
        # 1. Go template: the only actions are the secret placeholders.
        text = task_yaml
        for name, value in values:
            text = text.replace(f"{{{{.Values.{name}}}}}", value)
        task = yaml.safe_load(text)
        # 2. Volumes, written the way the agent writes them.
        for volume in task.get("volumes", []):
            for name, b64value in volume["secret"].items():
                self.write_volume_file(volume["name"], name, b64value)
        # 3. Steps: "<image> sh -eu <mountPath>/<file>" with mountPaths mapped to the volume dirs.
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        for step in task["steps"]:
            if step.get("entryPoint") == "sh":  # a tool image (trivy, oras): its entry point replaced
                image, flags, script = step["cmd"].split(" ")
                assert flags == "-eu" and not _is_docker_cli(image)
            else:
                image, shell, flags, script = step["cmd"].split(" ")
                assert (shell, flags) == ("sh", "-eu") and _is_docker_cli(image)
            mounts = {m["mountPath"]: self.workspace / m["name"] for m in step["volumeMounts"]}
            script_path = mounts["/run/slipway"] / Path(script).name
            launcher = script_path.read_text()
            if "/run/slipway-secrets" in mounts:
                launcher = launcher.replace("/run/slipway-secrets", str(mounts["/run/slipway-secrets"]))
            else:
                launcher = launcher.replace("/run/slipway-secrets", str(self.root / "not-mounted"))
            local = self.root / f"{step['id']}.sh"
            local.write_text(launcher)
            results[step["id"]] = subprocess.run(
                [*self.shell, "-eu", str(local)], env=self.env, capture_output=True, text=True, timeout=60
            )
            if results[step["id"]].returncode != 0:
                break
        return results

    def docker_calls(self) -> list[dict[str, Any]]:
        if not self.docker_log.exists():
            return []
        return [json.loads(line) for line in self.docker_log.read_text().splitlines()]
