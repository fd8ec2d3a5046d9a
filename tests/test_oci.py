"""The OCI registry client against a real registry (docker-registry), a token realm and a fake ACR."""

from __future__ import annotations

import email.utils
import json
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.platform.oci import (
    ACR_AUDIENCE,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    AcrTokenProvider,
    ImageReference,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryError,
    TransientRegistryError,
    Unauthorized,
    UntrustedRealm,
    compute_digest,
    parse_challenges,
    parse_reference,
    parse_retry_after,
)
from tests.support.ports import free_port
from tests.support.registry import (
    Answer,
    FakeAadCredential,
    FakeAcr,
    OciRegistry,
    RecordedRequest,
    TokenServer,
    fake_jwt,
    serve_loopback,
)

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha512:" + "b" * 128

# -- parse_reference -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "canonical"),
    [
        ("python", "docker.io", "library/python", "latest", None, "docker.io/library/python:latest"),
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", None, None),
        ("library/python:3.12", "docker.io", "library/python", "3.12", None, None),
        ("docker.io/python:3.12", "docker.io", "library/python", "3.12", None, None),
        ("index.docker.io/library/python:3", "docker.io", "library/python", "3", None, None),
        ("myorg/app", "docker.io", "myorg/app", "latest", None, "docker.io/myorg/app:latest"),
        ("mcr.microsoft.com/dotnet/aspnet:8.0", "mcr.microsoft.com", "dotnet/aspnet", "8.0", None, None),
        ("ghcr.io/org/img:tag", "ghcr.io", "org/img", "tag", None, "ghcr.io/org/img:tag"),
        ("myacr.azurecr.io/base:1", "myacr.azurecr.io", "base", "1", None, None),
        ("MyAcr.AzureCR.io/base:1", "myacr.azurecr.io", "base", "1", None, "myacr.azurecr.io/base:1"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None, None),
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app", "latest", None, None),
        ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None, None),
        ("Foo/bar:1", "Foo", "bar", "1", None, "Foo/bar:1"),  # uppercase first part: a host (Docker)
        ("a__b/c-d--e.f_g:X_1.2-3", "docker.io", "a__b/c-d--e.f_g", "X_1.2-3", None, None),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None, None),  # as Docker reads it
        (f"python@{DIGEST_A}", "docker.io", "library/python", None, DIGEST_A, None),
        (f"python:3.12@{DIGEST_A}", "docker.io", "library/python", "3.12", DIGEST_A, None),
        (f"ghcr.io/o/i@{DIGEST_B}", "ghcr.io", "o/i", None, DIGEST_B, None),
    ],
)
def test_parse_reference(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, canonical: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    if canonical is not None:
        assert str(ref) == canonical
    assert parse_reference(str(ref)) == ref
    assert ref.reference == (digest or tag)


def test_reference_endpoint_and_construction() -> None:
    assert parse_reference("python:3.12").endpoint == "registry-1.docker.io"
    assert parse_reference("ghcr.io/o/i").endpoint == "ghcr.io"
    assert ImageReference("index.docker.io", "python", "3") == parse_reference("python:3")
    with pytest.raises(ValueError, match="needs a tag or a digest"):
        ImageReference("ghcr.io", "o/i")
    with pytest.raises(ValueError, match="would read as a Docker Hub namespace"):
        ImageReference("registry", "o/i", "1")
    assert str(parse_reference("ghcr.io/o/i:1").with_digest(DIGEST_A)) == f"ghcr.io/o/i:1@{DIGEST_A}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Python:3", "must be lowercase"),
        ("docker.io/Library/python", "must be lowercase"),
        ("python:", "empty tag"),
        ("python:-bad", "invalid tag"),
        ("python:" + "a" * 129, "invalid tag"),
        ("python@sha256:abc", "invalid digest"),
        ("python@sha256:" + "A" * 64, "invalid digest"),
        ("python@md5:" + "a" * 32, "invalid digest"),
        ("python@", "invalid digest"),
        ("https://ghcr.io/org/img", "URL scheme"),
        ("ghcr.io/org//img", "invalid repository"),
        ("ghcr.io/org/img_", "invalid repository"),
        ("ghcr.io/org/-img", "invalid repository"),
        ("ghcr.io/", "repository name is empty"),
        ("ghcr.io:99999/a", "out of range"),
        ("-bad.io/a", "invalid registry host"),
        ("my acr.io/x", "whitespace"),
        (":tag", "no repository name"),
        ("a" * 256, "longer than 255"),
    ],
)
def test_parse_reference_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reference(text)


_COMPONENT = st.from_regex(r"[a-z0-9]{1,8}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,8}){0,2}", fullmatch=True)
_HOSTS = st.one_of(
    st.sampled_from(["mcr.microsoft.com", "ghcr.io", "myacr.azurecr.io", "localhost", "docker.io"]),
    st.from_regex(r"[a-z0-9]{1,10}\.[a-z]{2,6}(?::[1-9][0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"localhost:[1-9][0-9]{0,3}", fullmatch=True),
)


@given(
    registry=st.none() | _HOSTS,
    components=st.lists(_COMPONENT, min_size=1, max_size=3),
    tag=st.none() | st.from_regex(r"\w[\w.-]{0,20}", fullmatch=True).filter(str.isascii),
    digest=st.none() | st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
)
def test_parse_reference_round_trip(
    registry: str | None, components: list[str], tag: str | None, digest: str | None
) -> None:
    path = "/".join(components)
    if registry is None:  # the first component must not look like a host
        assume(len(components) == 1 or ("." not in components[0] and components[0] != "localhost"))
    text = (
        (f"{registry}/" if registry else "")
        + path
        + (f":{tag}" if tag else "")
        + (f"@{digest}" if digest else "")
    )
    assume(len(text) < 200)
    ref = parse_reference(text)
    expected_registry = registry or "docker.io"
    assert ref.registry == expected_registry
    single = expected_registry == "docker.io" and len(components) == 1
    assert ref.repository == (f"library/{path}" if single else path)
    assert ref.tag == (tag if tag or digest else "latest")
    assert ref.digest == digest
    assert parse_reference(str(ref)) == ref


def test_parse_retry_after_and_challenges() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(date, now=lambda: now) == pytest.approx(90, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=lambda: now) == 0.0
    [challenge] = parse_challenges(
        ['Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push",error="x"']
    )
    assert challenge.scheme == "bearer"
    assert (challenge.realm, challenge.service, challenge.scope) == (
        "https://auth.example/token",
        "reg",
        "repository:a/b:pull,push",
    )


def test_client_base_urls() -> None:
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"
    assert RegistryClient("mcr.microsoft.com").base_url == "https://mcr.microsoft.com"
    assert RegistryClient("http://127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("ghcr.io:8443", insecure=True).base_url == "http://ghcr.io:8443"
    assert RegistryClient("http://10.0.0.5:5000", insecure=True).registry == "10.0.0.5:5000"
    with pytest.raises(ValueError, match="refusing plain http"):
        RegistryClient("http://myacr.azurecr.io")
    with pytest.raises(ValueError, match="expected host"):
        RegistryClient("https://ghcr.io/v2")
    with pytest.raises(ValueError, match="not both"):
        RegistryClient("ghcr.io", credentials=("u", "p"), token_provider=AcrTokenProvider(object(), "x.io"))  # type: ignore[arg-type]


# -- against the real registry -------------------------------------------------------------------


def test_resolve_digest_of_a_pushed_image(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    client = oci_registry.client()
    assert client.resolve_digest(f"{oci_registry.host}/{repo}:v1") == digest
    assert client.resolve_digest(parse_reference(f"{oci_registry.host}/{repo}@{digest}")) == digest
    with pytest.raises(ValueError, match="not on"):
        client.resolve_digest(f"ghcr.io/{repo}:v1")


def test_index_with_attestations(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    index_digest, children = oci_registry.push_index(
        repo, "multi", [("linux", "amd64"), ("linux", "arm64", "v8")], created="2024-05-01T12:00:00Z"
    )
    client = oci_registry.client()
    assert client.resolve_digest(f"{oci_registry.host}/{repo}:multi") == index_digest

    index = client.get_manifest(repo, "multi")
    assert index.is_index and index.media_type == MEDIA_TYPE_OCI_INDEX
    assert index.digest == index_digest
    assert [d.digest for d in index.manifests] == children
    images, attestations = index.manifests[:2], index.manifests[2:]
    assert [str(d.platform) for d in images] == ["linux/amd64", "linux/arm64/v8"]
    assert not any(d.is_attestation for d in images)
    assert all(d.is_attestation and str(d.platform) == "unknown/unknown" for d in attestations)
    assert [d.attests for d in attestations] == [d.digest for d in images]

    child = client.get_manifest(repo, images[1].digest)
    assert child.media_type == MEDIA_TYPE_OCI_MANIFEST and not child.is_index
    assert child.config is not None and len(child.layers) == 1
    config = json.loads(client.get_blob(repo, child.config.digest))
    assert (config["created"], config["os"], config["architecture"], config["variant"]) == (
        "2024-05-01T12:00:00Z",
        "linux",
        "arm64",
        "v8",
    )
    attestation = client.get_manifest(repo, attestations[0].digest)
    assert attestation.layers[0].media_type == "application/vnd.in-toto+json"


def test_moving_a_tag_changes_the_digest(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    ref = f"{oci_registry.host}/{repo}:stable"
    first = oci_registry.push_image(repo, "stable")
    client = oci_registry.client()
    assert client.resolve_digest(ref) == first
    moved = oci_registry.move_tag(repo, "stable")
    assert moved != first
    assert client.resolve_digest(ref) == moved
    assert client.get_manifest(repo, first).digest == first  # the old image is still there, untagged


def test_oci_manifests_need_the_oci_accept_header(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    url = f"{oci_registry.url}/v2/{repo}/manifests/v1"
    for accept in (None, MEDIA_TYPE_DOCKER_MANIFEST):  # the registry's behaviour we must cope with
        plain = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(plain, timeout=5)
        assert caught.value.code == 404
        caught.value.close()
    client = token_server.client()
    assert client.resolve_digest(f"{token_server.host}/{repo}:v1") == digest
    assert client.get_manifest(repo, "v1").digest == digest
    sent = [r for r in token_server.requests if r.path.endswith("/manifests/v1")]
    assert {r.method for r in sent} == {"HEAD", "GET"}
    for request in sent:
        accepted = [part.strip() for part in request.headers["accept"].split(",")]
        for media_type in (
            MEDIA_TYPE_OCI_INDEX,
            MEDIA_TYPE_OCI_MANIFEST,
            MEDIA_TYPE_DOCKER_MANIFEST_LIST,
            MEDIA_TYPE_DOCKER_MANIFEST,
        ):
            assert media_type in accepted


def test_list_tags(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1", layer_content=b"same", created="2024-01-01T00:00:00Z")
    oci_registry.push_image(repo, "v2")
    oci_registry.push_index(repo, "multi", attestation=False)
    assert (
        oci_registry.push_image(repo, "latest", layer_content=b"same", created="2024-01-01T00:00:00Z")
        == digest
    )
    client = oci_registry.client()
    assert sorted(client.list_tags(repo)) == ["latest", "multi", "v1", "v2"]
    with pytest.raises(NotFound):
        client.list_tags(oci_registry.new_repo("missing"))


def test_list_tags_follows_link_pagination(token_server: TokenServer) -> None:
    repo = "team/app"
    json_type = {"Content-Type": "application/json"}
    token_server.fail_next(
        200,
        headers={**json_type, "Link": f'</v2/{repo}/tags/list?n=2&last=b>; rel="next"'},
        body=json.dumps({"name": repo, "tags": ["a", "b"]}).encode(),
    )
    token_server.fail_next(200, headers=json_type, body=json.dumps({"name": repo, "tags": ["c"]}).encode())
    assert token_server.client().list_tags(repo, page_size=2) == ["a", "b", "c"]
    first, second = token_server.requests
    assert (first.path, first.params) == (f"/v2/{repo}/tags/list", {"n": ["2"]})
    assert second.params == {"n": ["2"], "last": ["b"]}


def test_pagination_link_must_stay_on_the_registry(token_server: TokenServer) -> None:
    token_server.fail_next(
        200,
        headers={"Content-Type": "application/json", "Link": '<https://elsewhere.example/v2/x>; rel="next"'},
        body=b'{"name": "x", "tags": ["a"]}',
    )
    with pytest.raises(RegistryError, match="leaves the registry"):
        token_server.client().list_tags("x")


def test_delete_by_digest(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "a", layer_content=b"x", created="2024-01-01T00:00:00Z")
    oci_registry.push_image(repo, "b", layer_content=b"x", created="2024-01-01T00:00:00Z")
    client = oci_registry.client()
    with pytest.raises(ValueError, match="needs a digest"):
        client.delete_manifest(repo, "a")
    client.delete_manifest(repo, digest)
    for tag in ("a", "b"):  # every tag pointing at the digest goes with it
        with pytest.raises(NotFound):
            client.resolve_digest(f"{oci_registry.host}/{repo}:{tag}")
    with pytest.raises(NotFound):
        client.get_manifest(repo, digest)
    with pytest.raises(NotFound):
        client.delete_manifest(repo, digest)
    assert client.list_tags(repo) == []  # the registry answers "tags": null


def test_deleting_an_index_leaves_its_children(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    index_digest, children = oci_registry.push_index(repo, "multi")
    client = oci_registry.client()
    client.delete_manifest(repo, index_digest)
    with pytest.raises(NotFound):
        client.get_manifest(repo, "multi")
    assert [client.get_manifest(repo, child).digest for child in children] == children


def test_referrer_subject(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    image = oci_registry.push_image(repo, "v1")
    referrer = oci_registry.push_referrer(repo, image, artifact_type="application/vnd.dev.cosign.sig")
    manifest = oci_registry.client().get_manifest(repo, referrer)
    assert manifest.subject is not None and manifest.subject.digest == image
    assert manifest.artifact_type == "application/vnd.dev.cosign.sig"


def test_not_found_and_blob_limits(oci_registry: OciRegistry) -> None:
    repo = oci_registry.new_repo()
    oci_registry.push_image(repo, "v1")
    client = oci_registry.client()
    with pytest.raises(NotFound) as caught:
        client.resolve_digest(f"{oci_registry.host}/{repo}:nope")
    assert caught.value.status == 404
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        client.get_manifest(repo, "nope")
    with pytest.raises(NotFound):
        client.get_blob(repo, DIGEST_A)
    big = oci_registry.push_blob(repo, b"x" * 4096)
    assert client.get_blob(repo, big) == b"x" * 4096
    with pytest.raises(RegistryError, match="limit") as limited:
        client.get_blob(repo, big, max_bytes=1000)
    assert not isinstance(limited.value, TransientRegistryError | NotFound)


# -- the bearer-token challenge ------------------------------------------------------------------


def test_challenge_flow_gets_and_caches_a_token(oci_registry: OciRegistry, token_server: TokenServer) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    client = token_server.client()
    ref = f"{token_server.host}/{repo}:v1"

    assert client.resolve_digest(ref) == digest
    [token_request] = token_server.token_requests
    assert token_request.params == {"service": [token_server.service], "scope": [f"repository:{repo}:pull"]}
    assert "authorization" not in token_request.headers  # anonymous
    unauthenticated, authenticated = token_server.requests
    assert "authorization" not in unauthenticated.headers
    assert authenticated.headers["authorization"].startswith("Bearer ")

    assert client.resolve_digest(ref) == digest
    assert client.get_manifest(repo, "v1").digest == digest
    assert len(token_server.token_requests) == 1  # cached: the realm is not asked again
    assert len(token_server.requests) == 4  # and the token is sent without another 401 first

    other = oci_registry.new_repo()
    oci_registry.push_image(other, "v1")
    client.resolve_digest(f"{token_server.host}/{other}:v1")
    assert token_server.token_requests[-1].params["scope"] == [f"repository:{other}:pull"]
    assert len(token_server.token_requests) == 2


def test_expired_or_refused_tokens_are_renewed(oci_registry: OciRegistry, token_server: TokenServer) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    now = [1000.0]
    token_server.expires_in = None  # the spec's default lifetime: 60 s
    client = token_server.client(clock=lambda: now[0])
    ref = f"{token_server.host}/{repo}:v1"
    client.resolve_digest(ref)
    now[0] += 30
    client.resolve_digest(ref)
    assert len(token_server.token_requests) == 1
    now[0] += 31
    client.resolve_digest(ref)
    assert len(token_server.token_requests) == 2
    token_server.revoke_all()  # the registry refuses a token we still think valid: renew once
    assert client.resolve_digest(ref) == digest
    assert len(token_server.token_requests) == 3


def test_access_token_field_and_basic_credentials(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    token_server.token_field = "access_token"
    token_server.credentials = ("robot", "s3cret")
    ref = f"{token_server.host}/{repo}:v1"
    assert token_server.client(credentials=("robot", "s3cret")).resolve_digest(ref) == digest
    assert token_server.token_requests[-1].headers["authorization"].startswith("Basic ")
    with pytest.raises(Unauthorized):
        token_server.client(credentials=("robot", "wrong")).resolve_digest(ref)
    with pytest.raises(Unauthorized):
        token_server.client().resolve_digest(ref)


def test_push_and_delete_through_the_token_realm(token_server: TokenServer) -> None:
    client = token_server.client()
    repo = "pushed/app"
    config = json.dumps({"created": "2024-01-01T00:00:00Z", "os": "linux", "architecture": "amd64"}).encode()
    config_digest = client.put_blob(repo, config)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    digest = client.put_manifest(repo, "v1", body, MEDIA_TYPE_OCI_MANIFEST)
    assert client.resolve_digest(f"{token_server.host}/{repo}:v1") == digest
    client.delete_manifest(repo, digest)
    scopes = [scope for r in token_server.token_requests for scope in r.params["scope"]]
    assert scopes == [f"repository:{repo}:pull,push", f"repository:{repo}:pull", f"repository:{repo}:delete"]
    with pytest.raises(NotFound):
        client.get_manifest(repo, digest)


def test_redirects_do_not_carry_credentials_to_another_host(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    repo = oci_registry.new_repo()
    oci_registry.push_image(repo, "v1")
    client = token_server.client()
    client.resolve_digest(f"{token_server.host}/{repo}:v1")  # now the client holds a pull token
    data = b'{"created": "2024-01-01T00:00:00Z"}'
    stored: list[RecordedRequest] = []

    def storage(request: RecordedRequest) -> Answer:
        stored.append(request)
        return Answer(200, {"Content-Type": "application/octet-stream"}, data)

    with serve_loopback(storage) as port:
        token_server.fail_next(307, headers={"Location": f"http://127.0.0.1:{port}/blob?sig=abc"})
        assert client.get_blob(repo, compute_digest(data)) == data
    assert token_server.requests[-1].headers["authorization"].startswith("Bearer ")
    [download] = stored
    assert download.params == {"sig": ["abc"]}
    assert "authorization" not in download.headers


def test_basic_challenge_is_answered_with_credentials(token_server: TokenServer) -> None:
    digest = "sha256:" + "c" * 64
    token_server.fail_next(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
    token_server.fail_next(200, headers={"Docker-Content-Digest": digest})
    client = token_server.client(credentials=("user", "pw"))
    assert client.resolve_digest(f"{token_server.host}/team/app:v1") == digest
    first, second = token_server.requests
    assert "authorization" not in first.headers
    assert second.headers["authorization"] == "Basic dXNlcjpwdw=="
    token_server.fail_next(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
    with pytest.raises(Unauthorized):
        token_server.client().resolve_digest(f"{token_server.host}/team/app:v1")


# -- where the registry password may go (issue 21: a challenge must not steer it elsewhere) ------


def _challenge_elsewhere(token_server: TokenServer, realm_host: str) -> None:
    """The next registry answer names a realm on ``realm_host`` (served by the same loopback server)."""
    realm = f"http://{realm_host}:{token_server.port}/token"
    challenge = f'Bearer realm="{realm}",service="{token_server.service}"'
    token_server.fail_next(401, headers={"WWW-Authenticate": challenge})


def test_credentials_never_go_to_a_realm_off_the_registry_host(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    repo = oci_registry.new_repo()
    oci_registry.push_image(repo, "v1")
    token_server.credentials = ("robot", "s3cret")
    ref = f"{token_server.host}/{repo}:v1"  # the registry is 127.0.0.1; "localhost" is another host name
    _challenge_elsewhere(token_server, "localhost")
    with pytest.raises(UntrustedRealm, match=r"localhost.*SLIPWAY_REGISTRY_AUTH_REALMS"):
        token_server.client(credentials=("robot", "s3cret")).resolve_digest(ref)
    assert token_server.token_requests == []  # the realm never saw a request, let alone the password


def test_a_named_realm_host_receives_the_credentials(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    token_server.credentials = ("robot", "s3cret")
    _challenge_elsewhere(token_server, "localhost")
    client = token_server.client(credentials=("robot", "s3cret"), trusted_realm_hosts=["LocalHost "])
    assert client.resolve_digest(f"{token_server.host}/{repo}:v1") == digest
    assert token_server.token_requests[0].headers["authorization"].startswith("Basic ")


def test_anonymous_clients_follow_any_realm(oci_registry: OciRegistry, token_server: TokenServer) -> None:
    """Without credentials there is nothing to leak: public images keep working behind any realm."""
    repo = oci_registry.new_repo()
    digest = oci_registry.push_image(repo, "v1")
    _challenge_elsewhere(token_server, "localhost")
    assert token_server.client().resolve_digest(f"{token_server.host}/{repo}:v1") == digest
    assert "authorization" not in token_server.token_requests[0].headers


@pytest.mark.parametrize(
    ("registry", "realm", "trusted", "allowed"),
    [
        # Docker Hub's challenge names https://auth.docker.io/token (Docker's "Registry
        # authentication" reference, https://docs.docker.com/reference/api/registry/auth/).
        ("docker.io", "https://auth.docker.io/token", (), True),
        ("docker.io", "https://auth.docker.io.evil.example/token", (), False),
        ("ghcr.io", "https://auth.docker.io/token", (), False),  # Docker Hub's realm is Docker Hub's only
        ("ghcr.io", "https://ghcr.io/token", (), True),
        ("ghcr.io", "https://evil.example/token", (), False),
        ("registry.example", "https://auth.example/token", ("auth.example",), True),
        ("registry.example", "http://auth.example/token", ("auth.example",), False),  # plain http
    ],
)
def test_which_realms_may_receive_credentials(
    registry: str, realm: str, trusted: tuple[str, ...], allowed: bool
) -> None:
    client = RegistryClient(registry, credentials=("u", "p"), trusted_realm_hosts=trusted)
    if allowed:
        client._realms.check(realm)
    else:
        with pytest.raises(UntrustedRealm):
            client._realms.check(realm)


def test_retention_backend_trusts_the_realms_the_setting_names(
    oci_registry: OciRegistry, token_server: TokenServer
) -> None:
    from shared.pruning.retention.prune import backend_from_settings

    repo = oci_registry.new_repo()
    oci_registry.push_image(repo, "v1")
    token_server.credentials = ("robot", "s3cret")
    settings = {"SLIPWAY_REGISTRY_USERNAME": "robot", "SLIPWAY_REGISTRY_PASSWORD": "s3cret"}
    _challenge_elsewhere(token_server, "localhost")
    with pytest.raises(UntrustedRealm):
        backend_from_settings(settings, token_server.url, "oci").read_tags(repo)
    _challenge_elsewhere(token_server, "localhost")
    trusting = {**settings, "SLIPWAY_REGISTRY_AUTH_REALMS": "auth.example, localhost"}
    tags = backend_from_settings(trusting, token_server.url, "oci").read_tags(repo)
    assert [t.name for t in tags] == ["v1"]


def test_429_is_rate_limited_with_retry_after(token_server: TokenServer) -> None:
    client = token_server.client()
    token_server.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        client.resolve_digest(f"{token_server.host}/library/python:3.12")
    assert caught.value.retry_after == 7.0
    assert isinstance(caught.value, TransientRegistryError)

    token_server.fail_next(
        429,
        headers={"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)},
        body=b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}',
    )
    with pytest.raises(RateLimited, match="pull rate limit") as dated:
        client.get_manifest("library/python", "3.12")
    assert dated.value.retry_after == pytest.approx(120, abs=5)
    assert dated.value.codes == ("TOOMANYREQUESTS",)

    token_server.fail_next(429)
    with pytest.raises(RateLimited) as bare:
        client.list_tags("library/python")
    assert bare.value.retry_after is None


def test_server_errors_and_timeouts_are_transient(token_server: TokenServer) -> None:
    ref = f"{token_server.host}/library/python:3.12"
    token_server.fail_next(503)
    with pytest.raises(TransientRegistryError) as caught:
        token_server.client().resolve_digest(ref)
    assert caught.value.status == 503

    token_server.fail_next(200, delay=1.0)
    with pytest.raises(TransientRegistryError, match="timed out"):
        token_server.client(timeout=0.2).resolve_digest(ref)

    token_server.fail_next(503, target="token")
    with pytest.raises(TransientRegistryError):
        token_server.client().resolve_digest(ref)
    token_server.fail_next(429, headers={"Retry-After": "3"}, target="token")
    with pytest.raises(RateLimited):
        token_server.client().resolve_digest(ref)


def test_connection_refused_is_transient() -> None:
    port = free_port()  # nothing listens there
    client = RegistryClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(TransientRegistryError, match="connection failed"):
        client.resolve_digest(f"127.0.0.1:{port}/app:v1")


# -- ACR: Entra ID token exchange ----------------------------------------------------------------


def _acr_client(acr: FakeAcr, **provider_options: object) -> RegistryClient:
    provider = AcrTokenProvider(acr.credential, acr.url, verify=acr.ca_path, **provider_options)  # type: ignore[arg-type]
    return RegistryClient(acr.url, token_provider=provider, verify=acr.ca_path)


def test_acr_token_exchange(fake_acr: FakeAcr) -> None:
    digest = fake_acr.add_image("base/dotnet", "8.0")
    client = _acr_client(fake_acr)
    assert client.resolve_digest(f"{fake_acr.login_server}/base/dotnet:8.0") == digest

    assert fake_acr.credential.scopes == [(ACR_AUDIENCE,)]
    [exchange] = fake_acr.calls("/oauth2/exchange")
    assert exchange.method == "POST"
    assert exchange.headers["content-type"] == "application/x-www-form-urlencoded"
    assert exchange.form == {
        "grant_type": ["access_token"],
        "service": [fake_acr.login_server],
        "tenant": [fake_acr.tenant_id],
        "access_token": [fake_acr.aad_token],
    }
    [token] = fake_acr.calls("/oauth2/token")
    assert token.method == "POST"
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token.form == {
        "grant_type": ["refresh_token"],
        "service": [fake_acr.login_server],
        "scope": ["repository:base/dotnet:pull"],
        "refresh_token": fake_acr.issued_refresh_tokens,
    }
    [head] = [r for r in fake_acr.requests if r.path.startswith("/v2/")]
    assert head.method == "HEAD"
    assert head.headers["authorization"] == f"Bearer {fake_acr.issued_access_tokens[0]}"

    client.resolve_digest(f"{fake_acr.login_server}/base/dotnet:8.0")  # both tokens cached
    assert (len(fake_acr.calls("/oauth2/exchange")), len(fake_acr.calls("/oauth2/token"))) == (1, 1)
    fake_acr.add_image("base/python", "3.12")
    client.resolve_digest(f"{fake_acr.login_server}/base/python:3.12")  # the refresh token serves any scope
    assert (len(fake_acr.calls("/oauth2/exchange")), len(fake_acr.calls("/oauth2/token"))) == (1, 2)
    assert fake_acr.calls("/oauth2/token")[-1].form["scope"] == ["repository:base/python:pull"]


def test_acr_refused_access_token_is_renewed(fake_acr: FakeAcr) -> None:
    digest = fake_acr.add_image("app", "1")
    client = _acr_client(fake_acr)
    client.resolve_digest(f"{fake_acr.login_server}/app:1")
    fake_acr.revoke_access_tokens()
    assert client.resolve_digest(f"{fake_acr.login_server}/app:1") == digest
    assert len(fake_acr.calls("/oauth2/token")) == 2


def test_acr_tenant_option_and_rejected_identity(fake_acr: FakeAcr) -> None:
    fake_acr.add_image("app", "1")
    fake_acr.aad_token = "opaque-token-without-claims"
    fake_acr.credential = FakeAadCredential(fake_acr.aad_token)
    client = _acr_client(fake_acr, tenant_id=fake_acr.tenant_id, audience="https://acr.example/.default")
    client.resolve_digest(f"{fake_acr.login_server}/app:1")
    assert fake_acr.calls("/oauth2/exchange")[0].form["tenant"] == [fake_acr.tenant_id]
    assert fake_acr.credential.scopes == [("https://acr.example/.default",)]

    fake_acr.credential = FakeAadCredential(fake_jwt({"tid": fake_acr.tenant_id}))  # not the token it accepts
    with pytest.raises(Unauthorized):
        _acr_client(fake_acr).resolve_digest(f"{fake_acr.login_server}/app:1")


def test_tls_is_verified_by_default(fake_acr: FakeAcr) -> None:
    fake_acr.add_image("app", "1")
    provider = AcrTokenProvider(fake_acr.credential, fake_acr.url)  # no test CA: must not connect
    client = RegistryClient(fake_acr.url, token_provider=provider)
    with pytest.raises(RegistryError, match="TLS verification failed") as caught:
        client.resolve_digest(f"{fake_acr.login_server}/app:1")
    assert not isinstance(caught.value, TransientRegistryError)
    assert fake_acr.requests == []


@pytest.mark.parametrize(
    ("configured", "base"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("myregistry.azurecr.io", "myregistry.azurecr.io"),
        ("ghcr.io", "ghcr.io"),
        ("https://127.0.0.1:5000", "https://127.0.0.1:5000"),
    ],
)
def test_registry_base_speaks_http_only_to_loopback(configured: str, base: str) -> None:
    from shared.platform.oci import registry_base

    assert registry_base(configured) == base


@pytest.mark.parametrize(
    ("registry", "acr"),
    [
        ("myacr.azurecr.io", True),
        ("MyAcr.AzureCR.io", True),
        ("myacr.azurecr.cn", True),
        ("https://myacr.azurecr.us/", True),
        ("myacr.azurecr.io:443", True),
        ("ghcr.io", False),
        ("azurecr.io.example.com", False),
        ("x.azurecr.io.example.com", False),
        ("azurecr.io", False),
        ("notazurecr.io", False),
        ("127.0.0.1:5000", False),
    ],
)
def test_acr_login_servers_of_every_cloud_are_recognised(registry: str, acr: bool) -> None:
    """One rule for the poller, retention and the CLI: sovereign clouds' registries are ACR too."""
    from shared.platform.oci import is_acr
    from shared.pruning.retention.prune import guess_api

    assert is_acr(registry) is acr
    assert guess_api(registry) == ("acr" if acr else "oci")
