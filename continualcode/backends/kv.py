"""The KV prefix store: one cached prompt prefix per mode, so consecutive passes skip what they share.

Boundary: a store of (token ids, KV cache, weights version) entries and the rule for reusing them;
the model forward is handed in as a callable, so this module knows nothing of adapters or losses.

One entry per mode: "live" (valid only for the weights version it was computed under: every change
of the LoRA weights bumps the version) and "base" (the frozen model; never stale).  A request for
a prefix takes the stored entry's longest common prefix with the request, crops the cache to it and
runs the forward only on the rest.  Sampling leaves the proposal's prompt under "live", so the
teacher (same weights, same prefix up to the correction) and the student pass of the step that
follows skip the prompt; while the adapter is still a no-op (`share_live=True`: every LoRA B zero,
before the first step) a "base" request may start from the "live" entry too.

A correction's prompt may be carried across its update (`carry`): the "live" entry's part that is the
corrected call's prompt keeps its KV, computed under the weights before the step, and is marked stale up
to its length.  A stale entry serves only requests that hold all of its stale part (the retry and the rest
of that conversation, which extend the prompt); any other request (a new task's prompt sharing only the
system text, a compaction that changed the middle) runs from scratch under the current weights.  Why: after
an update every prompt token's KV is out of date, and re-running a ~3k-token conversation before the retry
was ~80% of what a user waited after a denial (a user trial: 77 s of 91 s, the 1.5B model at one
thread); the step itself was taken on that very prefix (without gradient through it: `prefix_grad`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# forward(ids, cache or None) -> the cache extended by `ids` (run without grad)
Forward = Callable[[Sequence[int], Any], Any]


@dataclass
class KVEntry:
    """A stored KV cache: the token ids it holds and the weights version it was computed under."""

    ids: tuple[int, ...]
    cache: Any
    version: int
    stale: int = 0  # its first `stale` positions were computed under earlier weights (`PrefixStore.carry`)


class PrefixStore:
    """KV caches of prompt prefixes, one per mode ("live", "base")."""

    def __init__(self, forward: Forward) -> None:
        self._forward = forward
        self.entries: dict[str, KVEntry] = {}
        self.last_reused = 0  # tokens of the last `prefix` request served from the store

    def prefix(self, ids: Sequence[int], mode: str, version: int, *, share_live: bool = False) -> Any:
        """A KV cache holding exactly `ids` under `mode`'s weights (None for no ids); stored for reuse.

        `version` is the live weights' version (ignored for "base", whose version is always 0).
        """
        if not ids:
            self.last_reused = 0
            return None
        want = _weights(mode, version)
        entry = self.entries.get(mode)
        if mode == "base" and share_live:
            live = self.entries.get("live")  # the same weights: the sampler's KV serves as the reference's
            if live is not None and live.version == version and not live.stale and lcp(live.ids, ids) > (
                    lcp(entry.ids, ids) if entry is not None else 0):
                entry = KVEntry(live.ids, copy.deepcopy(live.cache), 0)
        m = usable(entry, ids) if entry is not None and entry.version == want else 0
        cache, stale = (entry.cache, entry.stale) if entry is not None and m > 0 else (None, 0)
        if cache is not None and cache.get_seq_length() > m:
            crop(cache, m)
        self.last_reused = m
        if m < len(ids):
            cache = self._forward(ids[m:], cache)
        if mode in ("live", "base"):
            self.entries[mode] = KVEntry(tuple(ids), cache, want, stale)
        return cache

    def carry(self, prompt: Sequence[int], version: int) -> int:
        """Keep the "live" entry's part that is `prompt` (a corrected call's prompt) for the weights `version`
        after an update, stale up to there (see the module docstring); the tokens kept.  The entry may lack
        the prompt's last token (a completion's scores run it with the completion's positions); one that holds
        less is dropped (0): its stale part could be a prefix that other tasks share."""
        entry = self.entries.get("live")
        m = lcp(entry.ids, prompt) if entry is not None else 0
        if entry is None or m < len(prompt) - 1 or m == 0:
            self.entries.pop("live", None)
            return 0
        if entry.cache.get_seq_length() > m:
            crop(entry.cache, m)
        self.entries["live"] = KVEntry(tuple(prompt[:m]), entry.cache, version, m)
        return m

    def fill(self, ids: Sequence[int], version: int, *, chunk: int, stop: Any = None, mode: str = "live") -> int:
        """Extend `mode`'s entry to hold `ids` (from its longest common prefix with them), `chunk` tokens
        per forward, returning after the chunk during which `stop` (a threading.Event) was set; the
        tokens it computed.  The caller runs it under `mode`'s weights."""
        entry = self.entries.get(mode)
        want = _weights(mode, version)
        done = usable(entry, ids) if entry is not None and entry.version == want else 0
        start = done
        while done < len(ids) and not (stop is not None and stop.is_set()):
            done = min(len(ids), done + chunk)
            self.prefix(ids[:done], mode, version)
        return done - start

    def extended(self, mode: str, ids: Sequence[int], cache: Any) -> None:
        """The cache handed out for `mode` now holds `ids` (a forward without grad extended it in place)."""
        if mode in self.entries:
            entry = self.entries[mode]
            self.entries[mode] = KVEntry(tuple(ids), cache, entry.version, entry.stale)

    def put(self, mode: str, ids: Sequence[int], cache: Any, version: int) -> None:
        """Store `cache` as holding `ids` (the sampler's prompt and tokens, built on the entry its `prefix` call
        left): stale as far as that entry was, when `ids` extend it."""
        cur = self.entries.get(mode)
        stale = 0  # the common case, no carried prompt: the whole conversation's ids are not compared
        if cur is not None and cur.stale and cur.version == version and lcp(cur.ids, ids) >= cur.stale:
            stale = cur.stale
        self.entries[mode] = KVEntry(tuple(ids), cache, version, stale)

    def clear(self) -> None:
        self.entries.clear()


def _weights(mode: str, version: int) -> int:
    """The weights version an entry of `mode` is computed under: the live one's, or 0 for the frozen base."""
    return 0 if mode == "base" else version


def usable(entry: KVEntry, ids: Sequence[int]) -> int:
    """How many of `ids` the entry's cache serves: their longest common prefix, or 0 when that stops short
    of the entry's stale part."""
    m = lcp(entry.ids, ids)
    return m if m >= entry.stale else 0


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def read_only(cache: Any) -> Any:
    """A view of a stored DynamicCache for one forward with grad: each layer's `update` returns the stored
    keys and values with the new positions appended and stores nothing.  Why: the forward must not write into
    the store (it was a deep copy of the prefix: ~115 MB for 4k tokens of the 1.5B model), and under layer
    checkpointing (`train.checkpoint_layers`) the backward replays each layer's forward, which would append the
    completion a second time.  The view's length stays the prefix's, which is what the replay needs."""
    view = copy.copy(cache)

    def update(keys: Any, values: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        layer = cache.layers[layer_idx]
        return torch.cat([layer.keys, keys], dim=-2), torch.cat([layer.values, values], dim=-2)

    view.update = update
    return view


def crop(cache: Any, keep: int) -> None:
    """Cut a DynamicCache to its first `keep` positions (a negative crop removes tokens in 4.x and 5.x)."""
    n_remove = cache.get_seq_length() - keep
    if n_remove > 0:
        cache.crop(-n_remove)
