"""A real OCI registry and loopback auth servers for the registry-client tests (pytest plugin).

* ``oci_registry`` (session) / ``fresh_oci_registry`` (per test): Debian's ``docker-registry``
  with push helpers (``oci_registry.py``).
* ``token_server``: a bearer-token realm plus an authenticating proxy in front of ``oci_registry``
  (``token_realm.py``).
* ``fake_acr``: an HTTPS stand-in for ACR's Entra ID token exchange, and ``FakeAadCredential``
  (``fake_acr.py``); ``oci_test_ca`` is the session's test CA for the HTTPS fakes.

The loopback servers themselves come from ``loopback_server.py``. This module registers the
fixtures (``tests/conftest.py`` lists it) and keeps the names tests import from it.
"""

from __future__ import annotations

from tests.support.fake_acr import FakeAadCredential, FakeAcr, fake_acr, fake_jwt, oci_test_ca
from tests.support.loopback_server import Answer, RecordedRequest, loopback_tls, serve_loopback
from tests.support.oci_registry import (
    OciRegistry,
    RegistryUnavailable,
    fresh_oci_registry,
    oci_registry,
    running_registry,
    start_registry,
)
from tests.support.token_realm import TokenServer, required_scope, token_server

__all__ = [
    "Answer",
    "FakeAadCredential",
    "FakeAcr",
    "OciRegistry",
    "RecordedRequest",
    "RegistryUnavailable",
    "TokenServer",
    "fake_acr",
    "fake_jwt",
    "fresh_oci_registry",
    "loopback_tls",
    "oci_registry",
    "oci_test_ca",
    "required_scope",
    "running_registry",
    "serve_loopback",
    "start_registry",
    "token_server",
]
