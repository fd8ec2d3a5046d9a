"""ACR token reuse in the retention backend, counted on the loopback data plane (issue 22.5).

``azure-containerregistry`` 1.2.0 alone sends every call without a token, takes the 401
challenge, exchanges the Entra ID token for a refresh token and that for an access token, then
sends the call again (azure/containerregistry/_authentication_policy.py: ``on_request`` is an
empty hook "Future caching implementation will be included here"; _exchange_client.py:
``get_refresh_token`` re-exchanges while more than 300 s remain). The first test measures that
on the real SDK; the others show the backend's client paying it once per route, not per call.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from azure.containerregistry import ContainerRegistryClient

from shared.model.retention_rules import ImageRule
from shared.pruning.retention.acr_backend import AcrRetentionBackend
from shared.pruning.retention.acr_tokens import RENEW_MARGIN_S, route_key, token_expiry
from shared.pruning.retention.prune import prune_images
from tests.support.acr_dataplane import AcrDataPlane, acr_dataplane  # noqa: F401 (fixture)
from tests.support.registry import fake_jwt

OLD = datetime.now(UTC) - timedelta(days=40)
RULES = [ImageRule(repositories=["small", "large"], min_age="7d")]


def token_scopes(plane: AcrDataPlane) -> Counter[str]:
    """How many access tokens were asked for, by scope."""
    return Counter(scope for r in plane.calls("/oauth2/token") for scope in r.form["scope"])


def test_the_sdk_alone_pays_four_round_trips_per_call(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    digests = [plane.add_platform_image("app", created=OLD) for _ in range(3)]
    client = ContainerRegistryClient(plane.url, plane.credential, connection_verify=plane.ca_path)
    for digest in digests:
        client.get_manifest("app", digest)
    assert len(plane.requests) == 4 * 3
    assert len(plane.calls("/oauth2/exchange")) == 3 and len(plane.calls("/oauth2/token")) == 3


def test_a_prune_pass_exchanges_tokens_per_route_not_per_manifest(
    acr_dataplane: AcrDataPlane,  # noqa: F811
) -> None:
    plane = acr_dataplane
    for repository, count in (("small", 3), ("large", 15)):
        for _ in range(count):
            plane.add_platform_image(repository, created=OLD)  # old and untagged: all deleted
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    backend.read_everything = True  # plain images are not read any more: make every one a GET

    report = prune_images(backend, RULES, dry_run=False)

    assert report.ok, report.to_json()
    assert plane.repositories["small"].manifests == {} and plane.repositories["large"].manifests == {}
    scopes = token_scopes(plane)
    # One token per scope the pass needs, however many manifests it read and deleted.
    for repository in ("small", "large"):
        assert scopes[f"repository:{repository}:pull"] == 1
        assert scopes[f"repository:{repository}:delete"] == 1
        assert scopes[f"repository:{repository}:metadata_read"] <= 2  # tag listing, manifest listing
    large_manifest_calls = [r for r in plane.requests if r.path.startswith("/v2/large/manifests/")]
    assert len(large_manifest_calls) == 15 * 2 + 2  # a GET and a DELETE each, plus two 401s


def test_a_token_near_its_expiry_is_not_sent_again(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    plane.access_lifetime = int(RENEW_MARGIN_S) - 10  # every token is already inside the margin
    for _ in range(4):
        plane.add_platform_image("small", created=OLD)
    backend = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    backend.read_everything = True  # four GETs of the same route

    report = prune_images(backend, RULES, dry_run=True)

    assert report.ok
    assert token_scopes(plane)["repository:small:pull"] == 4


class RevokesAtFirstDelete(AcrRetentionBackend):
    """The registry forgets every access token just before the first deletion (a rotated key)."""

    plane: AcrDataPlane
    revoked = False

    def delete_manifest(self, repository: str, digest: str) -> None:
        if not self.revoked:
            self.revoked = True
            self.plane.revoke_access_tokens()
        super().delete_manifest(repository, digest)


def test_a_revoked_token_costs_a_challenge_not_a_failure(acr_dataplane: AcrDataPlane) -> None:  # noqa: F811
    plane = acr_dataplane
    digests = [plane.add_platform_image("small", created=OLD) for _ in range(5)]
    sdk = AcrRetentionBackend.connect(plane.url, plane.credential, connection_verify=plane.ca_path)
    backend = RevokesAtFirstDelete(sdk.client, sdk.registry)
    backend.plane = plane

    report = prune_images(backend, RULES, dry_run=False)

    assert backend.revoked and report.ok, report.to_json()
    assert sorted(report.repositories[0].deleted) == sorted(digests)
    assert plane.repositories["small"].manifests == {}


def test_routes_ignore_the_reference_and_the_query_but_not_the_repository() -> None:
    base = "https://r.azurecr.io"
    one = route_key("GET", f"{base}/v2/team/app/manifests/sha256:{'a' * 64}")
    assert one == route_key("get", f"{base}/v2/team/app/manifests/v1.2")
    assert one != route_key("DELETE", f"{base}/v2/team/app/manifests/v1.2")
    assert one != route_key("GET", f"{base}/v2/team/other/manifests/v1.2")
    assert route_key("GET", f"{base}/acr/v1/app/_tags?n=100&last=b") == route_key(
        "GET", f"{base}/acr/v1/app/_tags"
    )
    assert route_key("GET", f"{base}/acr/v1/app/_tags") != route_key("GET", f"{base}/acr/v1/app/_manifests")
    assert route_key("POST", f"{base}/oauth2/token") is None


def test_expiry_comes_from_the_jwt_else_a_short_default() -> None:
    assert token_expiry(fake_jwt({"exp": 2_000_000_000}), 100.0) == 2_000_000_000.0
    assert token_expiry("opaque", 100.0) == 160.0
    assert token_expiry("a.!!!.c", 100.0) == 160.0
