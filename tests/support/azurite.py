"""A real Azurite blob service for the tests (pytest plugin).

The ledger's guarantees rest on Blob Storage's conditional writes (If-None-Match, If-Match) and
ETags, so the tests exercise them against Azurite, the official emulator, rather than a fake
that would only confirm our own assumptions. Azurite starts in about three seconds, so one
instance serves the whole session (``azurite``) and each test that needs isolation, or that
deletes many blobs (Azurite slows down with bulk deletes), gets its own (``fresh_azurite``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.ports import free_port

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = Path("node_modules") / ".bin" / "azurite-blob"

# Azurite's account and key are public, fixed values (Azurite's documentation).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3


class AzuriteUnavailable(RuntimeError):
    """Azurite is not installed or did not start; the message says what to do."""


class AzuriteServer:
    """One running ``azurite-blob`` process and the coordinates a client needs."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, work_dir: Path) -> None:
        self.process = process
        self.port = port
        self.account_name = ACCOUNT_NAME
        self.account_key = ACCOUNT_KEY
        self._log_path = log_path
        self._work_dir = work_dir
        self._clients: list[BlobServiceClient | ContainerClient] = []

    @property
    def blob_endpoint(self) -> str:
        """Path-style endpoint, as Azurite serves it: ``http://127.0.0.1:<port>/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def service_client(self) -> BlobServiceClient:
        """A client for this instance; closed when the instance stops."""
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string)
        self._clients.append(client)
        return client

    def new_container(self, prefix: str = "test") -> ContainerClient:
        """Create a container with a unique name (``<prefix>-<12 hex>``) so tests never collide."""
        from azure.storage.blob import ContainerClient

        name = _container_name(prefix)
        container = ContainerClient.from_connection_string(self.connection_string, name)
        container.create_container()
        self._clients.append(container)
        return container

    def output(self) -> str:
        """What Azurite wrote to stdout/stderr so far (for error messages)."""
        try:
            return self._log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate, then kill if it does not exit within 10 s; close the clients handed out."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self._work_dir, ignore_errors=True)


def _container_name(prefix: str) -> str:
    """A valid container name: 3-63 lowercase letters, digits and single hyphens."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", prefix.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")[:50] or "c"
    return f"{cleaned}-{uuid.uuid4().hex[:12]}"


def azurite_executable(root: Path = REPO_ROOT) -> Path:
    """The repo-local ``azurite-blob``; a missing one is a setup problem, so fail loudly, never skip."""
    path = root / AZURITE_BLOB
    if not path.exists():
        raise AzuriteUnavailable(
            f"{path} is missing: Azurite (npm, pinned in package-lock.json) is not installed. "
            "Run ./dev setup (it runs `npm ci`), then the tests again."
        )
    return path


def _answers(server: AzuriteServer) -> bool:
    """True once Azurite accepts a connection and serves a container listing."""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=1):
            pass
    except OSError:
        return False
    from azure.storage.blob import BlobServiceClient

    try:
        with BlobServiceClient.from_connection_string(server.connection_string, retry_total=0) as client:
            list(client.list_containers(results_per_page=1))
    except Exception:
        return False
    return True


def _launch(executable: Path, port: int) -> AzuriteServer:
    work_dir = Path(tempfile.mkdtemp(prefix="azurite-"))
    log_path = work_dir / "azurite.log"
    with log_path.open("wb") as log:
        # A file, not a pipe: nobody drains a pipe while the tests run, and a full pipe would
        # block Azurite. Its working directory is private so that nothing lands in the repo.
        process = subprocess.Popen(
            [
                str(executable),
                "--silent",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
            ],
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
    return AzuriteServer(process, port, log_path, work_dir)


def start_azurite(*, root: Path = REPO_ROOT, timeout: float = STARTUP_TIMEOUT) -> AzuriteServer:
    """Start ``azurite-blob`` in memory on a free loopback port and wait until it serves requests.

    The free port is found by binding port 0 and releasing it, so another process may take it
    before Azurite does; an instance that exits early with "address in use" is retried on a new port.
    """
    executable = azurite_executable(root)
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        server = _launch(executable, free_port())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            if _answers(server):
                return server
            time.sleep(0.1)
        exited = server.process.poll() is not None
        output = server.output()
        server.stop()
        if exited and "EADDRINUSE" in output and attempt < _PORT_ATTEMPTS:
            continue
        state = (
            f"exited with code {server.process.returncode}"
            if exited
            else f"did not answer within {timeout:.0f} s"
        )
        raise AzuriteUnavailable(
            f"Azurite ({executable}) on 127.0.0.1:{server.port} {state}. Its output:\n{output or '(none)'}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_azurite() -> Iterator[AzuriteServer]:
    try:
        server = start_azurite()
    except AzuriteUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    """One Azurite for the session; use ``new_container`` to keep tests apart."""
    with running_azurite() as server:
        yield server


@pytest.fixture
def fresh_azurite() -> Iterator[AzuriteServer]:
    """A private Azurite for one test (nothing shared, no accumulated deletes)."""
    with running_azurite() as server:
        yield server


def dead_storage_connection_string(port: int) -> str:
    """A connection string for Azurite's development account on ``port``, where nothing listens
    (``free_port()``)."""
    from shared.platform.storage import DEVELOPMENT_STORAGE_ACCOUNT, DEVELOPMENT_STORAGE_KEY

    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEVELOPMENT_STORAGE_ACCOUNT};"
        f"AccountKey={DEVELOPMENT_STORAGE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{DEVELOPMENT_STORAGE_ACCOUNT};"
    )
