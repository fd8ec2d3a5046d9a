"""An ACR run's log, read (and followed while the run goes on) through the run's log SAS link.

The link comes from ``runs.get_log_sas_url`` (REST ``POST .../registries/{registry}/runs/{runId}
/listLogSasUrl``, answer ``RunGetLogResult.logLink``:
https://learn.microsoft.com/rest/api/containerregistry/runs/getlogsasurl). It points at an
append blob that ACR extends while the run writes; this module reads it from an offset with
``Range: bytes=<offset>-``, which Blob Storage answers with 206 and the bytes from the offset to
the blob's end, or 416 when the offset is at or past the end ("Format 1: bytes=startByte-",
versions 2011-08-18 and later:
https://learn.microsoft.com/rest/api/storageservices/specifying-the-range-header-for-blob-service-operations).

The end of the log: ``az acr task logs`` (azure-cli, ``src/azure-cli/azure/cli/command_modules/acr/
_stream_utils.py``, https://github.com/Azure/azure-cli) reads the blob by
ranges and stops once the blob's metadata holds ``Complete`` (Get Blob returns metadata as
``x-ms-meta-<name>`` headers: https://learn.microsoft.com/rest/api/storageservices/get-blob), backing
off from 1 s to 15 s while nothing new arrives. Here the log also ends once a read made after the
run was seen terminal (``runs.get``) brings nothing new. The SAS link is a secret while it is
valid: it is never printed or logged, and errors name only the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.acr.run_backend import RunHandle, TransientBackendError

# x-ms-version of the ranged reads: any version from 2011-08-18 accepts the open-ended
# ``bytes=<offset>-`` form (see the module docstring); this one is a current GA version.
STORAGE_VERSION = "2021-08-06"
# Metadata ACR sets on the log blob when the log is complete (what ``az acr task logs`` waits for).
COMPLETE_HEADER = "x-ms-meta-Complete"
READ_CHUNK = 4 * 1024 * 1024  # bytes taken from one answer before the next ranged read
POLL_INTERVAL = 1.0  # seconds, doubled while nothing new arrives (az acr task logs: 1 s .. 15 s)
MAX_POLL_INTERVAL = 15.0
MAX_RETRY_AFTER = 120.0  # a longer Retry-After is capped: the operator is watching
MAX_TRANSIENT_FAILURES = 8  # in a row, before following gives up with the last error
LOG_TIMEOUT = 30.0

Sleep = Callable[[float], None]


class LogReadError(OSError):
    """The log could not be read; the message names the HTTP status, never the link."""


@dataclass(frozen=True)
class _Read:
    data: bytes
    complete: bool


class _Throttled(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _LinkRefused(Exception):
    """403: the SAS link expired (or was revoked): ask for a new one."""


def _read_from(url: str, offset: int, *, verify: str | bool, timeout: float) -> _Read | None:
    """The log's bytes from ``offset`` (at most ``READ_CHUNK``); None when the blob is not there yet."""
    from shared.platform.http.client import HttpClient, parse_retry_after, tls_context

    if not url.startswith("https://"):
        raise LogReadError("the run log link must be https")
    if verify is False:
        raise LogReadError("refusing to read a run log without TLS verification")
    client = HttpClient(timeout=timeout, tls=tls_context(verify))
    headers = {"Range": f"bytes={offset}-", "x-ms-version": STORAGE_VERSION}
    with client.open("GET", url, headers=headers) as answer:
        complete = answer.header(COMPLETE_HEADER) is not None
        if answer.status == 416:  # nothing past the offset (yet)
            return _Read(b"", complete)
        if answer.status == 404:
            return None
        if answer.status in (429, 500, 503):
            raise _Throttled(answer.status, parse_retry_after(answer.header("Retry-After")))
        if answer.status == 403:
            raise _LinkRefused()
        if answer.status == 200 and offset:
            # A server that ignored the range sent the whole blob: keep only what is new.
            data = answer.read(offset + READ_CHUNK)[offset:]
            return _Read(data, complete)
        if answer.status not in (200, 206):
            raise LogReadError(f"reading the run log failed: HTTP {answer.status}")
        return _Read(answer.read(READ_CHUNK), complete)


def read_log(
    link: Callable[[], str | None],
    status: Callable[[], RunHandle] | None = None,
    *,
    verify: str | bool = True,
    sleep: Sleep = time.sleep,
    timeout: float = LOG_TIMEOUT,
) -> Iterator[bytes]:
    """The log's bytes as they are read. Without ``status``, what the log holds now; with it, the
    log followed until the run has ended and the log is fully read.

    ``link`` asks ACR for the SAS link (again when the blob refuses an expired one); ``status``
    reads the run. Throttling (429, 503) and transient ARM failures wait for their Retry-After
    (capped at ``MAX_RETRY_AFTER``), else back off; ``MAX_TRANSIENT_FAILURES`` in a row give up.
    """
    follow = status is not None
    url: str | None = None
    offset = 0
    delay = POLL_INTERVAL
    ended = False
    check = follow  # read the run's status before the next read
    failures = 0
    refreshed = False

    def wait(retry_after: float | None) -> None:
        nonlocal delay, failures
        failures += 1
        sleep(min(retry_after, MAX_RETRY_AFTER) if retry_after is not None else delay)
        delay = min(delay * 2, MAX_POLL_INTERVAL)

    while True:
        checked = False  # the run's status was read before this iteration's read
        try:
            if check and status is not None and not ended:
                ended = status().finished
                check, checked = False, True
            if url is None:
                url = link()
                if url is None:  # no log yet
                    if not follow or ended:
                        return
                    sleep(delay)
                    delay = min(delay * 2, MAX_POLL_INTERVAL)
                    check = True
                    continue
            read = _read_from(url, offset, verify=verify, timeout=timeout)
        except TransientBackendError as exc:
            if failures >= MAX_TRANSIENT_FAILURES:
                raise
            wait(exc.retry_after)
            continue
        except _Throttled as exc:
            if failures >= MAX_TRANSIENT_FAILURES:
                raise LogReadError(f"reading the run log failed: {exc}") from None
            wait(exc.retry_after)
            continue
        except _LinkRefused:
            if refreshed:
                raise LogReadError("reading the run log failed: HTTP 403 (link refused)") from None
            url, refreshed = None, True
            continue
        failures = 0
        data = read.data if read is not None else b""
        if data:
            offset += len(data)
            delay, refreshed = POLL_INTERVAL, False
            yield data
            continue
        complete = read is not None and read.complete
        if not follow or ended or complete:
            return
        check = True
        if not checked:
            # Nothing new since the last bytes: look at the run before waiting, so a run that ended
            # meanwhile gets one more read and no sleep.
            continue
        sleep(delay)
        delay = min(delay * 2, MAX_POLL_INTERVAL)


__all__ = ["LogReadError", "read_log"]
