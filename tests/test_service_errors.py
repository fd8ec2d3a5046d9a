"""One rule for "a remote service failed" (shared/platform/errors.py)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from shared.acr.run_backend import PermanentBackendError, TransientBackendError
from shared.platform.errors import ServiceError, is_service_error, one_line
from shared.platform.oci import NotFound, RegistryError
from shared.platform.queue.port import QueueError
from shared.pruning.cache_gc.store import CacheStoreError
from shared.runs.commit_status import StatusPostError


@pytest.mark.parametrize(
    "exc",
    [
        RegistryError("registry said no"),
        NotFound("gone"),
        CacheStoreError("container 'x' does not exist"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        ServiceRequestError("cannot connect"),
        HttpResponseError("403 Forbidden"),
    ],
)
def test_remote_failures_are_service_errors(exc: Exception) -> None:
    assert is_service_error(exc)


@pytest.mark.parametrize("exc", [KeyError("x"), TypeError("bug"), AttributeError("bug"), AssertionError()])
def test_bugs_are_not(exc: Exception) -> None:
    """A bug keeps its traceback: the commands re-raise what is not a service's failure."""
    assert not is_service_error(exc)


def test_one_line_keeps_the_first_line_or_names_the_type() -> None:
    assert (
        one_line(HttpResponseError("Operation returned 403\nContent: {...}\nmore"))
        == "Operation returned 403"
    )
    assert one_line(TimeoutError()) == "TimeoutError"
    assert one_line(ValueError("  \n")) == "ValueError"


@pytest.mark.parametrize(
    "error_type",
    [
        RegistryError,
        CacheStoreError,
        QueueError,
        TransientBackendError,
        PermanentBackendError,
        StatusPostError,
    ],
)
def test_every_adapters_failure_has_the_one_base(error_type: type[Exception]) -> None:
    """A caller that catches ``ServiceError`` catches a failure of any adapter, whichever it is."""
    assert issubclass(error_type, ServiceError)
