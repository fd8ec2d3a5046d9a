"""The identity-keyed cache routing and tag planning share (shared/model/pinned_cache.py)."""

from __future__ import annotations

from shared.model.pinned_cache import PinnedCache


class Owner:
    pass


def test_an_entry_is_found_only_with_the_very_owners_it_was_stored_with() -> None:
    cache: PinnedCache[str] = PinnedCache(8)
    first, second = Owner(), Owner()
    assert cache.put((first,), "ref", "plan-a") == "plan-a"
    assert cache.get((first,), "ref") == "plan-a"
    assert cache.get((second,), "ref") is None
    assert cache.get((first,), "other ref") is None
    assert cache.get((first, second), "ref") is None


def test_an_entry_keeps_its_owner_alive_so_its_id_cannot_be_reused() -> None:
    cache: PinnedCache[str] = PinnedCache(8)
    cache.put((Owner(),), "k", "v")  # the only reference to this owner is the entry's
    for _ in range(1000):  # new objects would take a freed id
        assert cache.get((Owner(),), "k") is None


def test_a_full_cache_starts_again_empty() -> None:
    cache: PinnedCache[int] = PinnedCache(2)
    owner = Owner()
    cache.put((owner,), 1, 1)
    cache.put((owner,), 2, 2)
    cache.put((owner,), 3, 3)
    assert (cache.get((owner,), 1), cache.get((owner,), 3)) == (None, 3)
