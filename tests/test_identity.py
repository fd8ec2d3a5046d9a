"""The app's identity: one credential per client id, shared by every Azure client."""

from __future__ import annotations

from typing import Any

import pytest

from shared import identity


class RecordingCredential:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def test_one_credential_per_client_id_shared_by_every_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingCredential)
    identity._shared_credential.cache_clear()
    try:
        system = identity.app_credential({})
        assert system is identity.app_credential({"AZURE_CLIENT_ID": ""})  # empty means unset
        user = identity.app_credential({"AZURE_CLIENT_ID": "1111-uami"})
        assert user is identity.app_credential({"AZURE_CLIENT_ID": "1111-uami", "OTHER": "x"})
        assert user is not system
        assert isinstance(user, RecordingCredential) and isinstance(system, RecordingCredential)
        assert user.kwargs == {"managed_identity_client_id": "1111-uami"}
        assert system.kwargs == {"managed_identity_client_id": None}
    finally:
        identity._shared_credential.cache_clear()
