"""The field validators: every value from a message or the configuration passes one of these before
it reaches a script, a BuildKit attribute list or the YAML.

Each raises ``RenderError`` naming the field and what to fix, never quoting the value's secret
parts. The grammars are strict on purpose: what passes is then only ``shlex.quote``-d.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from shared.acr.task.spec import RenderError
from shared.model.build_request import PLATFORM_RE
from shared.model.config import STORAGE_ACCOUNT_NAME_RE, CacheStorage

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_URL_SEGMENT = r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+"
_REPO_URL_RE = re.compile(rf"^https://{_HOST}(?::[0-9]{{1,5}})?(?:/{_URL_SEGMENT})+/?$")
_ACCOUNT_URL_RE = re.compile(rf"^https?://{_HOST}(?::[0-9]{{1,5}})?(?:/{_URL_SEGMENT})*/?$")
# Azure container names: 3-63 lowercase letters, digits and single hyphens.
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
_BLOB_PATH_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._@+-]+$")
AGENT_POOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")
_IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_GIT_REF_FORBIDDEN = frozenset(" ~^:?*[\\")
# A ref that is itself the Git context's fragment (a head build): BuildKit splits the fragment at
# ":" (subdirectory) and Go's URL parser unescapes "%XX" in it, so only plain names are accepted.
FRAGMENT_REF_RE = re.compile(r"^refs/(?:heads|tags)/[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*$")


def check(field_name: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
    """``value`` if it is a string matching ``pattern``; else ``RenderError(field_name, rule)``."""
    if not isinstance(value, str) or not pattern.match(value):
        raise RenderError(field_name, rule)
    return value


def csv_value(field_name: str, value: str) -> str:
    """Refuse what would split or end a value in buildx's comma-separated attribute lists."""
    if any(c in value for c in ',;"\n\r'):
        raise RenderError(
            field_name,
            "must not contain ',', ';', '\"' or a line break (it goes into a BuildKit attribute list)",
        )
    return value


def git_ref(field_name: str, value: str) -> str:
    """A full ref name that ``git check-ref-format`` accepts; anything legal is then only quoted."""
    problem = None
    if not isinstance(value, str) or not value.startswith("refs/") or len(value) > 1024:
        problem = "must be a full ref name such as refs/heads/main"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or any(c in _GIT_REF_FORBIDDEN for c in value):
        problem = "must not contain control characters, spaces or any of ~ ^ : ? * [ \\"
    elif (
        ".." in value
        or "@{" in value
        or "//" in value
        or value.endswith(("/", "."))
        or any(part.startswith(".") or part.endswith(".lock") for part in value.split("/"))
    ):
        problem = "is not a valid Git ref name"
    if problem:
        raise RenderError(field_name, problem)
    return value


def repo_url(field_name: str, value: str) -> tuple[str, str]:
    """Return (the URL for the source label, the ``.git`` URL BuildKit treats as a Git context)."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise RenderError(field_name, "must be an https URL of printable ASCII")
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise RenderError(field_name, "must be an https URL")
    if "@" in parts.netloc:
        raise RenderError(
            field_name, "must not contain credentials (user:password@); use the target's git_token_setting"
        )
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise RenderError(field_name, "must not have a query or a fragment")
    if not _REPO_URL_RE.match(value):
        raise RenderError(
            field_name, "must be https://host[:port]/path with letters, digits and . _ ~ - in the path"
        )
    segments = parts.path.strip("/").split("/")
    if any(seg in (".", "..") for seg in segments):
        raise RenderError(field_name, "must not contain '.' or '..' path segments")
    base = value.rstrip("/")
    # BuildKit treats an https URL as a Git repository only when its path ends in ".git".
    git_url = base if base.endswith(".git") else base + ".git"
    return value, git_url


def relative_path(field_name: str, value: str, *, allow_root: bool) -> str:
    """A path inside the repository: relative, no ``..``, a small character set."""
    if not isinstance(value, str):
        raise RenderError(field_name, "must be a relative path")
    text = value
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/") if text not in ("", "/") else text
    if text in ("", "."):
        if allow_root:
            return "."
        raise RenderError(field_name, "must name a file")
    if text.startswith("/"):
        raise RenderError(field_name, "must be a relative path (no leading '/')")
    if len(text) > 1024:
        raise RenderError(field_name, "is too long")
    for segment in text.split("/"):
        if segment in ("", ".", ".."):
            raise RenderError(field_name, "must not contain '..', '.' or empty path segments")
        if not _PATH_SEGMENT_RE.match(segment):
            raise RenderError(
                field_name, "may only contain letters, digits and . _ @ + - in each path segment"
            )
    return text


def printable(field_name: str, value: str, *, limit: int) -> str:
    """One line of printable text of at most ``limit`` characters (it is only quoted)."""
    if not isinstance(value, str) or not value.isprintable() or "\x00" in value:
        raise RenderError(field_name, "must be printable text without line breaks or NUL")
    if len(value) > limit:
        raise RenderError(field_name, f"must be at most {limit} characters")
    return value


def tool_image(field_name: str, value: str) -> str:
    """A pinned image reference: it is the one config value written into a ``cmd`` text."""
    found = _IMAGE_RE.match(value) if isinstance(value, str) else None
    if not found or len(value) > 512:
        raise RenderError(
            field_name, "must be an image reference such as docker.io/library/docker:29.7.2-cli"
        )
    tag, digest = found.group("tag"), found.group("digest")
    if digest is None and (tag is None or tag == "latest"):
        raise RenderError(field_name, "must be pinned to a version tag or a digest")
    return value


def cache_storage(storage: CacheStorage) -> tuple[str, str, str, str]:
    """(account URL, account name, container, prefix) of the cache, each fit for an attribute list."""
    account_url = csv_value("cache.account_url", storage.account_url)
    if not _ACCOUNT_URL_RE.match(account_url):
        raise RenderError(
            "cache.account_url", "must be http(s)://host[:port][/path] without credentials or query"
        )
    try:
        account_name = storage.resolved_account_name
    except ValueError:
        raise RenderError(
            "cache.account_name", "is required: account_url does not name its storage account"
        ) from None
    check(
        "cache.account_name",
        account_name,
        STORAGE_ACCOUNT_NAME_RE,
        "must be lowercase letters and digits, at most 24",
    )
    container = csv_value("cache.container", storage.container)
    check(
        "cache.container",
        container,
        _CONTAINER_RE,
        "must be 3-63 lowercase letters, digits and single hyphens",
    )
    prefix = csv_value("cache.prefix", storage.prefix)
    if prefix:
        if len(prefix) > 512 or ".." in prefix.split("/"):
            raise RenderError("cache.prefix", "must be a blob path of at most 512 characters without '..'")
        check(
            "cache.prefix",
            prefix,
            _BLOB_PATH_RE,
            "may only contain letters, digits and . _ - separated by '/'",
        )
    return account_url, account_name, container, prefix


def platform_list(values: Iterable[str]) -> tuple[str, ...]:
    """The request's platforms, each once, in order: Linux only (the builder runs on a Linux agent)."""
    seen: list[str] = []
    for platform in values:
        check("platforms", platform, PLATFORM_RE, f"{platform!r} is not os/arch[/variant]")
        if not platform.startswith("linux/"):
            raise RenderError(
                "platforms", f"{platform} cannot be built: the BuildKit builder runs on a Linux agent"
            )
        if platform not in seen:
            seen.append(platform)
    if not seen:
        raise RenderError("platforms", "at least one platform is required")
    return tuple(seen)
