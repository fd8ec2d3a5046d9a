"""`slipway serve` as a user starts it: a subprocess on a free loopback port, run from a folder
holding its ``slipway.yaml``, started and stopped the same way by every test that talks to one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tests.support.ports import free_port

SLIPWAY = Path(sys.executable).with_name("slipway")
# Settings that would point serve at Azure (the host's own, Service Bus, ACR): never inherited.
AZURE_SETTING_PREFIXES = ("ServiceBus", "AzureWebJobs", "ACR_")


def local_env(*, drop: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without Azure settings, nor the names in ``drop``."""
    dropped = set(drop)
    return {
        k: v for k, v in os.environ.items() if not k.startswith(AZURE_SETTING_PREFIXES) and k not in dropped
    }


class ServeProcess:
    """``slipway serve --port <free> --config <workdir>/slipway.yaml``, run in ``workdir`` with ``env``."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """Where its functions answer (``slipway send --url``)."""
        return f"http://127.0.0.1:{self.port}/api/"

    def command(self, *args: str) -> list[str]:
        config = str(self.workdir / "slipway.yaml")
        return [str(SLIPWAY), "serve", "--port", str(self.port), "--config", config, *args]

    def start(self, *args: str, **extra_env: str) -> None:
        """Start it and wait until it listens; its output is kept for ``stop``."""
        self.proc = subprocess.Popen(
            self.command(*args),
            cwd=self.workdir,
            env={**self.env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("serve did not start listening")

    def stop(self) -> str:
        """Ctrl-C, as a user stops it: its output. Killed if it has not stopped after 30 s (its
        ``proc.returncode`` then says so)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out

    def kill(self) -> None:
        """Kill it if it still runs (a test's clean-up after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
