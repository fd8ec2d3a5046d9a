"""The collector's memory between runs: blobs found unreferenced and past grace, not yet deleted.

BuildKit's exporter checks each blob with a HEAD and skips the upload of one that is present, so
an old unreferenced blob can be reused by an export whose manifest lands minutes later; deleting
it in the run that first finds it unreferenced races with every export in flight (the blobs a
run frees by expiring a name are exactly the ones such an export reuses). So deletion is
two-phase: a run records what it would delete (with the ETag it listed and the time it first
saw it), and only a later run, at least ``settle`` later, deletes a blob it finds unreferenced,
past grace and with the same ETag again.

The document lives in the cache container itself, beside BuildKit's ``manifests/`` and ``blobs/``
(``<prefix>/slipway-gc/candidates``), as text: a header line, an optional
``resume <digest> [<token>]`` line (a run stopped by its work bound: the next run's sweep starts
after that blob, listing from the continuation token, percent-encoded, of the page that holds it),
then ``digest etag epoch`` per blob. A missing or unreadable document means no candidates: nothing
is deleted, everything restarts. The collector replaces it only if it is unchanged since the run
read it (``CacheStore.write_blob``'s ETag condition).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import quote, unquote

HEADER = "slipway-cache-gc-candidates 1"


class Candidate(NamedTuple):
    etag: str
    first_seen: datetime


class CandidateState(NamedTuple):
    candidates: dict[str, Candidate]
    resume_after: str | None  # the digest a bounded run stopped after; None: start at the beginning
    # The List Blobs continuation token of the page holding ``resume_after`` (or of the page after
    # it); None: list from the start and skip to ``resume_after``.
    resume_token: str | None = None


def parse_state(data: bytes) -> CandidateState | None:
    """The candidates and resume point of a document; None when it is not one (nothing is ripe)."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    if not lines or lines[0] != HEADER:
        return None
    found: dict[str, Candidate] = {}
    resume: str | None = None
    token: str | None = None
    for index, line in enumerate(lines[1:]):
        parts = line.split(" ")
        if index == 0 and len(parts) in (2, 3) and parts[0] == "resume" and all(parts[1:]):
            resume = parts[1]
            token = unquote(parts[2]) if len(parts) == 3 else None
            continue
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        found[parts[0]] = Candidate(parts[1], datetime.fromtimestamp(int(parts[2]), UTC))
    return CandidateState(found, resume, token)


def parse_candidates(data: bytes) -> dict[str, Candidate] | None:
    """The candidates of a document; None when it is not one (then nothing is ripe)."""
    state = parse_state(data)
    return None if state is None else state.candidates


def render_candidates(
    candidates: Mapping[str, Candidate] | Iterable[tuple[str, Candidate]],
    *,
    resume_after: str | None = None,
    resume_token: str | None = None,
) -> bytes:
    items = candidates.items() if isinstance(candidates, Mapping) else candidates
    token = "" if not resume_token else " " + quote(resume_token, safe="")
    resume = "" if resume_after is None else f"resume {resume_after}{token}\n"
    body = "".join(f"{d} {c.etag} {int(c.first_seen.timestamp())}\n" for d, c in items)
    return f"{HEADER}\n{resume}{body}".encode("ascii")
