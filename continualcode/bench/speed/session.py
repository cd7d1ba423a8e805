"""Whole turns: a multi-turn session on a real third-party file, what a user waits for between calls.

The session is replayed the same way every run: greedy decoding, a fixed list of user tasks on a
copy of xmltodict 0.14.2 (a 522-line module, fetched and verified like the task benchmark's
packages), every call inside the workspace approved after the user has read it for `read_s`
seconds (the time `speculate` may use to prefill the next prompt; 0: an instant approval).  Per turn
it records the seconds from the user's approval of the previous call to the next proposal (the tool's
run and any wait for the speculative prefill included), the prompt's length, the tokens the sample
still had to prefill (the rest came from the KV store: the hit rate), and the tokens decoded.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TASKS = (
    "Show me the first 100 lines of xmltodict.py.",
    "Now show me lines 100 to 200 of it.",
    "Where is the unparse function defined? Answer with the line number.",
    "Read the unparse function and tell me what the pretty argument does.",
)
MAX_TURNS = 4
MAX_TOKENS = 256  # a call or a short answer; a model that rambles is cut here, not after cfg.max_tokens


def replay(backend: Any, renderer: Any, cfg: Any, *, read_s: float = 0.0, speculate: bool | None = None
           ) -> dict[str, Any]:
    """Run the scripted session (speculative prefill as `speculate`, default the config's); per-turn
    figures and their medians."""
    from continualcode.agent import Abort, Approve, SamplingConfig, Session
    from continualcode.bench.learn.scenario import unsafe
    from continualcode.bench.tasks.packages import PINS, copy_tree, source
    from continualcode.events import Proposal, ToolOutput
    from continualcode.models import cache_root
    from continualcode.tools import Workspace

    turns: list[dict[str, Any]] = []
    mark: dict[str, float] = {}

    class User:
        def decide(self, call: Any, preview: str) -> Any:
            if unsafe(call):
                return Abort()
            time.sleep(read_s)
            mark["approved"] = time.perf_counter()  # the user's key press: what follows is waited for
            return Approve()

    def on_event(ev: Any) -> None:
        if isinstance(ev, ToolOutput) and "approved" in mark:
            mark["ran"] = time.perf_counter()
        elif isinstance(ev, Proposal) and "ran" in mark:
            turns.append({"approval_to_proposal_s": time.perf_counter() - mark["approved"],
                          "tool_s": mark["ran"] - mark["approved"], "prompt_tokens": last["prompt"],
                          "prefill_tokens": backend.last_prefill, "decoded_tokens": ev.tokens})
            mark.clear()

    last: dict[str, int] = {"prompt": 0}
    src = source(PINS["xmltodict"], Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_root())
    with tempfile.TemporaryDirectory(prefix="cc-speed-") as d:
        ws = Workspace(copy_tree(src, Path(d) / "xmltodict"), sandbox="off")
        sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=min(cfg.max_tokens, MAX_TOKENS),
                                  max_turns=MAX_TURNS,
                                  speculate=cfg.speculate if speculate is None else speculate)
        s = Session(backend, renderer, ws, User(), sampling=sampling, on_event=on_event, seed=0)
        query = s.query

        def measured_query(**kw: Any) -> Any:
            last["prompt"] = len(renderer.prompt_ids(s.messages))
            return query(**kw)

        s.query = measured_query  # type: ignore[method-assign]
        backend.clear_cache()
        t0 = time.perf_counter()
        for task in TASKS:
            s.run_task(task)
        total = time.perf_counter() - t0
    for t in turns:
        t["kv_hit_rate"] = 1 - t["prefill_tokens"] / t["prompt_tokens"] if t["prompt_tokens"] else None
    waits = [t["approval_to_proposal_s"] for t in turns]
    return {
        "tasks": list(TASKS), "turns": turns, "seconds": total, "read_s": read_s,
        "speculate": sampling.speculate,
        "turn_latency_median_s": statistics.median(waits) if waits else None,
        "max_prompt_tokens": max((t["prompt_tokens"] for t in turns), default=0),
        "kv_hit_rate_median": statistics.median([t["kv_hit_rate"] for t in turns]) if turns else None,
    }
