"""A small OCI Distribution client: resolve tags, read and write manifests, blobs and tags.

Only the standard library is used, through the one outbound HTTP client
(``shared.platform.http.client``). The code lives in submodules named after what they do:

* ``errors``     the ``RegistryError`` family (not found, unauthorized, throttled, transient);
* ``manifests``  media types, ``Manifest``, ``Descriptor``, ``Platform``, content digests;
* ``auth``       ``WWW-Authenticate`` challenges, token lifetimes, ``AcrTokenProvider``;
* ``transport``  base URLs, redirects, bounded bodies, status → error, ``registry_base``, ``is_acr``;
* ``client``     ``RegistryClient``.

Image references are the model's (``shared.model.image_refs``); ``parse_reference`` is its
``parse_image_reference`` under the name this package has always exported.
"""

from shared.model.image_refs import DEFAULT_TAG as DEFAULT_TAG
from shared.model.image_refs import DOCKER_HUB as DEFAULT_REGISTRY
from shared.model.image_refs import DOCKER_HUB_ENDPOINT as DOCKER_HUB_ENDPOINT
from shared.model.image_refs import ImageReference as ImageReference
from shared.model.image_refs import check_repository as check_repository
from shared.model.image_refs import is_digest as is_digest
from shared.model.image_refs import parse_image_reference as parse_reference
from shared.platform.http.client import parse_retry_after as parse_retry_after
from shared.platform.oci.auth import ACR_AUDIENCE as ACR_AUDIENCE
from shared.platform.oci.auth import AcrTokenProvider as AcrTokenProvider
from shared.platform.oci.auth import Challenge as Challenge
from shared.platform.oci.auth import TokenProvider as TokenProvider
from shared.platform.oci.auth import parse_challenges as parse_challenges
from shared.platform.oci.client import DEFAULT_MAX_BLOB_BYTES as DEFAULT_MAX_BLOB_BYTES
from shared.platform.oci.client import RegistryClient as RegistryClient
from shared.platform.oci.errors import NotFound as NotFound
from shared.platform.oci.errors import RateLimited as RateLimited
from shared.platform.oci.errors import RegistryError as RegistryError
from shared.platform.oci.errors import TransientRegistryError as TransientRegistryError
from shared.platform.oci.errors import Unauthorized as Unauthorized
from shared.platform.oci.errors import UntrustedRealm as UntrustedRealm
from shared.platform.oci.manifests import ATTESTATION_REFERENCE_TYPE as ATTESTATION_REFERENCE_TYPE
from shared.platform.oci.manifests import INDEX_MEDIA_TYPES as INDEX_MEDIA_TYPES
from shared.platform.oci.manifests import MANIFEST_ACCEPT as MANIFEST_ACCEPT
from shared.platform.oci.manifests import MANIFEST_MEDIA_TYPES as MANIFEST_MEDIA_TYPES
from shared.platform.oci.manifests import MEDIA_TYPE_DOCKER_MANIFEST as MEDIA_TYPE_DOCKER_MANIFEST
from shared.platform.oci.manifests import MEDIA_TYPE_DOCKER_MANIFEST_LIST as MEDIA_TYPE_DOCKER_MANIFEST_LIST
from shared.platform.oci.manifests import MEDIA_TYPE_OCI_CONFIG as MEDIA_TYPE_OCI_CONFIG
from shared.platform.oci.manifests import MEDIA_TYPE_OCI_INDEX as MEDIA_TYPE_OCI_INDEX
from shared.platform.oci.manifests import MEDIA_TYPE_OCI_LAYER as MEDIA_TYPE_OCI_LAYER
from shared.platform.oci.manifests import MEDIA_TYPE_OCI_MANIFEST as MEDIA_TYPE_OCI_MANIFEST
from shared.platform.oci.manifests import Descriptor as Descriptor
from shared.platform.oci.manifests import Manifest as Manifest
from shared.platform.oci.manifests import Platform as Platform
from shared.platform.oci.manifests import compute_digest as compute_digest
from shared.platform.oci.transport import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from shared.platform.oci.transport import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES
from shared.platform.oci.transport import is_acr as is_acr
from shared.platform.oci.transport import registry_base as registry_base

__all__ = [
    "ACR_AUDIENCE",
    "ATTESTATION_REFERENCE_TYPE",
    "DEFAULT_MAX_BLOB_BYTES",
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "DEFAULT_TIMEOUT",
    "DOCKER_HUB_ENDPOINT",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_BYTES",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_MANIFEST",
    "AcrTokenProvider",
    "Challenge",
    "Descriptor",
    "ImageReference",
    "Manifest",
    "NotFound",
    "Platform",
    "RateLimited",
    "RegistryClient",
    "RegistryError",
    "TokenProvider",
    "TransientRegistryError",
    "Unauthorized",
    "UntrustedRealm",
    "check_repository",
    "compute_digest",
    "is_acr",
    "is_digest",
    "parse_challenges",
    "parse_reference",
    "parse_retry_after",
    "registry_base",
]
