"""Request prototypes: one fully validated BuildRequest per configuration, target and ref.

A push's request differs from the previous push's of the same target and ref only in its id,
commit, tags and trigger; everything else (repository, platforms, Dockerfile, cache, build
arguments) depends on the target and the ref. A full pydantic validation pass costs more than the
rest of a webhook, so routing validates once per ref and derives the next pushes' requests from
that prototype, checking the fields that differ with the model's own validators.

Kept because it is measured (``bench/ingest.py``, per-delivery ratio against the HMAC +
``json.loads`` floor, same run, same machine, issue #18): 3.0 / 3.1 / 3.0 with prototypes against
3.1 / 3.1 / 3.3 without. A property test (``tests/test_routing.py``) holds every derived request
equal to a full validation pass over the same data, and refused exactly when that pass refuses.
This module is the only place that builds a request without ``model_validate``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from pydantic import BaseModel

from shared.model.build_request import BuildRequest, Image, Source, Trigger, check_head_build
from shared.model.pinned_cache import PinnedCache

# Keyed by the configuration and target objects (frozen once loaded), so a reloaded configuration
# never gets a request shaped by the old one.
_PROTOTYPES: PinnedCache[BuildRequest] = PinnedCache(1024)


def request_from_prototype(
    owners: tuple[object, ...],
    key: Hashable,
    *,
    id: str,
    commit: str | None,
    tags: list[str],
    trigger: Trigger,
    validate: Callable[[], BuildRequest],
) -> BuildRequest:
    """The request for ``commit``: derived from the prototype of ``owners``/``key`` if there is one,
    otherwise ``validate()`` (a full pass over the same data), which becomes the prototype."""
    prototype = _PROTOTYPES.get(owners, key)
    if prototype is None:
        return _PROTOTYPES.put(owners, key, validate())
    return derive(prototype, id=id, commit=commit, tags=tags, trigger=trigger)


def derive(
    prototype: BuildRequest, *, id: str, commit: str | None, tags: list[str], trigger: Trigger
) -> BuildRequest:
    """``prototype`` for another commit of the same target and ref, with no full validation pass.

    The fields that differ go through the validators ``model_validate`` runs on them, so the result
    is what it accepts. The models are frozen, so sharing the unchanged parts is safe.
    """
    BuildRequest._id(id)
    Source._commit(commit)
    if not tags:
        raise ValueError("image.tags must not be empty")
    Image._tags(tags)
    check_head_build(commit, trigger.kind)
    return _replaced(
        prototype,
        id=id,
        trigger=trigger,
        source=_replaced(prototype.source, commit=commit),
        image=_replaced(prototype.image, tags=list(tags)),
    )


ModelT = TypeVar("ModelT", bound=BaseModel)


_set = object.__setattr__


def _replaced(model: ModelT, **changes: object) -> ModelT:
    """``model`` with ``changes``, for already-checked values: what ``model_copy(update=...)`` does,
    at half of its cost (it copies through ``copy.copy``, which matters on every webhook).

    Sets the instance attributes pydantic documents for ``BaseModel``; ``model_construct`` does the same.
    ``object.__setattr__`` is bound once and the dict is copied, then updated, rather than unpacked twice:
    a quarter less per copy, three copies per push (``bench/ingest.py``).
    """
    cls = type(model)
    copy = cls.__new__(cls)
    fields = model.__dict__.copy()
    fields.update(changes)
    _set(copy, "__dict__", fields)
    _set(copy, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(changes))
    _set(copy, "__pydantic_extra__", None)
    _set(copy, "__pydantic_private__", None)
    return copy
