"""What the suite's real servers (Azurite, the Debian registry) share: a child process on a free
loopback port, its log file, its private folder, and a start-up that survives a lost port race.

A free port is found by binding port 0 and releasing it, so another process may take it before
the child binds it; a child that exits saying its port is in use is started again on a new one.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support.ports import free_port

PORT_ATTEMPTS = 3


class ChildServer:
    """One child process with its output in ``log_path`` and its files in ``work_dir``."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, work_dir: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.work_dir = work_dir

    def output(self) -> str:
        """What the child wrote to stdout/stderr so far (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate, then kill if it does not exit within 10 s; remove its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def spawn(
    command: list[str], work_dir: Path, log_name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``work_dir`` with its output in a file there: not a pipe, which nobody
    drains while the tests run (a full pipe would block the child)."""
    with (work_dir / log_name).open("wb") as log:
        return subprocess.Popen(
            command, cwd=work_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )


S = TypeVar("S", bound=ChildServer)


def start_on_free_port(
    launch: Callable[[int], S],
    answers: Callable[[S], bool],
    *,
    name: str,
    port_in_use: str,
    timeout: float,
    interval: float,
    unavailable: Callable[[str], Exception],
) -> S:
    """``launch`` on a free port and wait until ``answers``; retry a lost port race (the child's
    output says ``port_in_use``); otherwise raise ``unavailable`` with the child's output."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = launch(free_port())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            if answers(server):
                return server
            time.sleep(interval)
        exited = server.process.poll() is not None
        output = server.output()
        server.stop()
        if exited and port_in_use in output and attempt < PORT_ATTEMPTS:
            continue
        state = (
            f"exited with code {server.process.returncode}"
            if exited
            else f"did not answer within {timeout:.0f} s"
        )
        raise unavailable(f"{name} on 127.0.0.1:{server.port} {state}. Its output:\n{output or '(none)'}")
    raise AssertionError("unreachable")  # pragma: no cover
