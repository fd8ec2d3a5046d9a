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
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.child_server import ChildServer, spawn, start_on_free_port

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = Path("node_modules") / ".bin" / "azurite-blob"

# Azurite's account and key are public, fixed values (Azurite's documentation).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_TIMEOUT = 30.0


class AzuriteUnavailable(RuntimeError):
    """Azurite is not installed or did not start; the message says what to do."""


class AzuriteServer(ChildServer):
    """One running ``azurite-blob`` process and the coordinates a client needs."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, work_dir: Path) -> None:
        super().__init__(process, port, log_path, work_dir)
        self.account_name = ACCOUNT_NAME
        self.account_key = ACCOUNT_KEY
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

    def stop(self) -> None:
        """Close the clients handed out, then stop the process."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        super().stop()


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


def _launch(executable: Path, port: int, location: Path | None = None) -> AzuriteServer:
    # A private working directory, so that nothing lands in the repository.
    work_dir = Path(tempfile.mkdtemp(prefix="azurite-"))
    # In memory, unless the caller keeps its state in ``location`` (Azurite's files: its LokiJS
    # databases and extent folder; --inMemoryPersistence and --location exclude each other).
    persistence = ["--inMemoryPersistence"] if location is None else ["--location", str(location)]
    command = [
        str(executable),
        "--silent",
        *persistence,
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
    ]
    process = spawn(command, work_dir, "azurite.log", env={**os.environ, "NODE_NO_WARNINGS": "1"})
    return AzuriteServer(process, port, work_dir / "azurite.log", work_dir)


def start_azurite(
    *, root: Path = REPO_ROOT, timeout: float = STARTUP_TIMEOUT, location: Path | None = None
) -> AzuriteServer:
    """Start ``azurite-blob`` on a free loopback port and wait until it serves requests: in memory,
    or with its files in ``location`` (kept when it stops; a benchmark seeds them between runs).

    The free port is found by binding port 0 and releasing it, so another process may take it
    before Azurite does; an instance that exits early with "address in use" is retried on a new port.
    """
    executable = azurite_executable(root)
    return start_on_free_port(
        lambda port: _launch(executable, port, location),
        _answers,
        name=f"Azurite ({executable})",
        port_in_use="EADDRINUSE",
        timeout=timeout,
        interval=0.1,
        unavailable=AzuriteUnavailable,
    )


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
