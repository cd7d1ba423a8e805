"""The KV prefix store's reuse rule (backends/kv.py), with a recording fake forward: which tokens run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from continualcode.backends.kv import PrefixStore, read_only


class FakeCache:
    """A cache that is the list of (token, weights version) pairs it holds, croppable like a DynamicCache."""

    def __init__(self, held: list[tuple[int, int]]) -> None:
        self.held = held

    def get_seq_length(self) -> int:
        return len(self.held)

    def crop(self, n: int) -> None:
        del self.held[n:]


class Model:
    """forward(ids, cache) for the store: extends the cache by `ids` under the current `version`, recording
    how many tokens each forward ran."""

    def __init__(self) -> None:
        self.version, self.ran = 0, []  # type: ignore[var-annotated]

    def __call__(self, ids: Sequence[int], cache: Any) -> FakeCache:
        self.ran.append(len(ids))
        held = cache.held if cache is not None else []
        return FakeCache(held + [(t, self.version) for t in ids])


def test_a_carried_prompt_serves_what_extends_it_and_nothing_that_shares_less():
    """After an update the corrected call's prompt keeps its KV (computed under the weights before it) for
    the retry and the rest of that conversation; a request that does not hold the whole prompt (a new task
    sharing only the system text) runs from scratch under the new weights."""
    model = Model()
    store = PrefixStore(model)
    system, task = [1, 2, 3], [4, 5, 6]
    prompt = system + task
    store.prefix(prompt, "live", 0)  # what sampling the denied call leaves
    model.version = 1  # the update
    assert store.carry(prompt, 1) == len(prompt)
    model.ran.clear()
    retry = [*prompt, 7, 8]  # the denied call and the correction, after the prompt
    cache = store.prefix(retry, "live", 1)
    assert model.ran == [2] and cache.held[: len(prompt)] == [(t, 0) for t in prompt]  # the stale part kept
    assert cache.held[len(prompt):] == [(7, 1), (8, 1)] and store.last_reused == len(prompt)
    later = [*retry, 9]  # the next turn of that task: still served, still stale up to the prompt's end
    store.prefix(later, "live", 1)
    assert model.ran == [2, 1] and store.entries["live"].stale == len(prompt)
    model.ran.clear()
    fresh = [*system, 10, 11]  # another task: shares the system text only
    cache = store.prefix(fresh, "live", 1)
    assert model.ran == [len(fresh)] and cache.held == [(t, 1) for t in fresh]
    assert store.entries["live"].stale == 0  # exact from here on
    store.prefix([*fresh, 12], "live", 1)
    assert model.ran == [len(fresh), 1]


def test_carry_drops_an_entry_that_does_not_hold_the_whole_prompt_and_a_new_version_ignores_it():
    model = Model()
    store = PrefixStore(model)
    store.prefix([1, 2, 3], "live", 0)
    assert store.carry([1, 2, 3, 4, 5], 1) == 0 and "live" not in store.entries  # the store held less
    store.prefix([1, 2, 3], "live", 0)
    assert store.carry([1, 2, 3, 4], 1) == 3  # all but the prompt's last token: kept (a score's prefix)
    store.clear()
    assert store.carry([5], 1) == 0  # nothing stored
    store.prefix([1, 2, 3, 4, 5], "live", 0)
    assert store.carry([1, 2, 3], 1) == 3 and store.entries["live"].ids == (1, 2, 3)  # cropped to the prompt
    assert store.entries["live"].cache.get_seq_length() == 3
    model.version = 2  # a later change of the weights (a restore, another step) without a carry: cold
    model.ran.clear()
    store.prefix([1, 2, 3, 4], "live", 2)
    assert model.ran == [4]


def test_a_warm_fill_takes_a_carried_prompt_only_where_it_holds_all_of_it():
    model = Model()
    store = PrefixStore(model)
    store.prefix([1, 2, 3, 4], "live", 0)
    model.version = 1
    store.carry([1, 2, 3, 4], 1)
    assert store.fill([1, 2, 3, 4, 5, 6], 1, chunk=8) == 2  # extends the retry's prompt
    store.carry([1, 2, 3, 4, 5, 6], 1)
    assert store.fill([1, 2, 9], 1, chunk=8) == 3  # shares only the start: all of it, under the new weights
    assert store.entries["live"].cache.held == [(1, 1), (2, 1), (9, 1)]


def test_what_the_sampler_stores_after_a_carried_prompt_stays_stale_as_far_as_it_was():
    """The sampler extends the cache `prefix` gave it and stores it back (`put`): the retry's sample keeps the
    mark, so the next task's prompt, sharing only the system text, still runs from scratch."""
    model = Model()
    store = PrefixStore(model)
    store.prefix([1, 2, 3, 4], "live", 0)
    model.version = 1
    store.carry([1, 2, 3, 4], 1)
    cache = store.prefix([1, 2, 3, 4, 5], "live", 1)  # the retry's prompt
    store.put("live", [1, 2, 3, 4, 5, 6, 7], cache, 1)  # its sampled tokens
    assert store.entries["live"].stale == 4
    model.ran.clear()
    store.prefix([1, 2, 9], "live", 1)
    assert model.ran == [3]
    store.put("live", [1, 2, 9, 10], store.entries["live"].cache, 1)
    assert store.entries["live"].stale == 0


def test_a_read_only_view_appends_to_what_the_store_holds_and_writes_nothing():
    """The grad forward's view of a stored prefix: every update (the forward's and a checkpointed layer's
    replay alike) returns the stored keys and values with the new ones appended, and the stored cache keeps
    its length and its tensors."""
    stored = DynamicCache()
    k0, v0 = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    stored.update(k0, v0, 0)
    view = read_only(stored)
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    for _ in range(2):  # the forward, then the backward's replay of the layer
        keys, values = view.update(k1, v1, 0)
        assert torch.equal(keys, torch.cat([k0, k1], dim=-2)) and torch.equal(values, torch.cat([v0, v1], dim=-2))
    assert view.get_seq_length() == stored.get_seq_length() == 5
    assert torch.equal(stored.layers[0].keys, k0) and torch.equal(stored.layers[0].values, v0)
