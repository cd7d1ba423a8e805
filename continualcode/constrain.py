"""Grammar-constrained decoding: every sampled turn is one valid tool call, or plain text.

The grammar (compiled once per tokenizer and tool set with xgrammar) is

    root  ::= call | text
    call  ::= "<tool_call>\\n" JSON "\\n</tool_call>"        then the stop token
    JSON  ::= anyOf over tools of {"name": <const>, "arguments": <that tool's argument schema>}
    text  ::= a plain-text answer: it opens with a letter or digit, and holds no "<" and no "{" that
              starts a JSON object ('{"' or '{ "')

so a known tool name, schema-valid arguments (no extra properties) and exactly one call per turn
are guaranteed, and the model may instead answer in text to end its turn.  A string may hold a backslash
before any printable character, as code does (`\\d`, `\\x00`: `code_escapes`), not only JSON's escapes.

The text rule is what keeps calls out of answers: after a tool result Qwen2.5-Coder-0.5B wrote nearly every next call as
text (a fenced ```json block, '>{"name": …}', '({"name": …}'; 11 of 12 proposals in the first task
benchmark runs); with prose required to open like prose and JSON objects barred from it, the
likeliest way to act left is the `<tool_call>` tag.  Per-tool `anyOf` matters: a loose schema lets a
small model call `bash` with invented arguments.

A `GrammarConstraint` is immutable and shared; `start()` returns the per-sample state that the
backend's sampling loop drives: `mask(logits)` → choose → `accept(token)` → `terminated()`.
The mask changes only what is sampled, never the log-probabilities reported for training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from continualcode.records import CALL_CLOSE, CALL_OPEN, JSON_SEPARATORS

if TYPE_CHECKING:  # torch loads with the backend, not with the UI
    import torch

TEXT_EBNF = 'root ::= [A-Za-z0-9] ([^<{] | "{" [^<"{ \\t\\n])*'


def call_schema(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call: anyOf, per tool, {name: const, arguments: its parameters}."""
    options = []
    for t in tools:
        fn = t["function"]
        options.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": fn["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return {"anyOf": options}


class GrammarState:
    """One sample's position in the grammar."""

    def __init__(self, matcher: Any, bitmask: torch.Tensor, vocab_size: int) -> None:
        self._m = matcher
        self._bitmask = bitmask
        self._vocab = vocab_size

    def mask(self, logits_V: torch.Tensor) -> torch.Tensor:
        """A copy of `logits_V` with every token the grammar forbids here set to -inf."""
        import torch
        import xgrammar as xg

        self._m.fill_next_token_bitmask(self._bitmask)
        out = logits_V.detach().to("cpu", torch.float32).clone().unsqueeze(0)
        xg.apply_token_bitmask_inplace(out, self._bitmask)
        return out[0].to(logits_V.device)

    def accept(self, token: int) -> bool:
        return bool(self._m.accept_token(int(token)))

    def terminated(self) -> bool:
        return bool(self._m.is_terminated())

    def forced(self) -> str:
        """The text the grammar allows alone from here ("" where it allows a choice, or has ended): after
        `<tool_call>` the `{"name": "`, after a tool's name its first argument's key, a call's closing."""
        return "" if self._m.is_terminated() else str(self._m.find_jump_forward_string())


class GrammarConstraint:
    """A compiled grammar over one tokenizer; cheap to `start()` per sample."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        self._compiled = compiled
        self._vocab = vocab_size

    def start(self) -> GrammarState:
        import xgrammar as xg

        return GrammarState(xg.GrammarMatcher(self._compiled), xg.allocate_token_bitmask(1, self._vocab), self._vocab)


def build_constraint(
    tokenizer: Any,
    tools: Sequence[dict[str, Any]],
    *,
    vocab_size: int,
    stop_ids: Sequence[int],
    allow_text: bool = True,
    allow_calls: bool = True,
) -> GrammarConstraint:
    """Compile the call-or-text grammar for this tokenizer and tool set (cached); `allow_text=False` keeps
    the call alone, `allow_calls=False` the text alone (an answer asked for: agent.py)."""
    if not (allow_text or allow_calls):
        raise ValueError("a grammar that allows neither a call nor text allows nothing")
    key = json.dumps([t["function"] for t in tools])  # key order matters: it is the grammar's property order
    return _compile(tokenizer, key, vocab_size, tuple(stop_ids), allow_text, allow_calls)


# xgrammar's rule for what may follow a backslash in a JSON string; `code_escapes` adds any other printable
# character but `u` (which stays JSON's `\\uXXXX`)
_ESCAPE_RULE = 'basic_escape ::= (([\\"\\\\/bfnrt]) | ("u" [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9]))'
_CODE_ESCAPE = '[^\\"\\\\/bfnrtu\\0-\\x1f]'


def code_escapes(grammar: Any) -> Any:
    """`grammar` with a JSON string's backslash allowed before any character, as code has it (`\\d`, `\\x00`,
    `\\.`); the call parser keeps such a backslash (`records.loads_call_json`).  Held to JSON's escapes the
    model cannot write a regex or a byte literal as it means it: the nearest allowed escape wins (`\\d` came
    out `\\b`, `\\x00` `\\n`, in 5 of 5 calls that needed one).  An xgrammar whose rule reads otherwise
    keeps its grammar as it is (a test fails then: tests/test_render.py)."""
    import xgrammar as xg

    ebnf = str(grammar)
    if _ESCAPE_RULE not in ebnf:
        return grammar
    widened = _ESCAPE_RULE[:-1] + f" | ({_CODE_ESCAPE}))"
    return xg.Grammar.from_ebnf(ebnf.replace(_ESCAPE_RULE, widened), root_rule_name="root")


@lru_cache(maxsize=8)
def _compile(
    tokenizer: Any, tools_key: str, vocab_size: int, stop_ids: tuple[int, ...], allow_text: bool, allow_calls: bool
) -> GrammarConstraint:
    import xgrammar as xg

    tools = [{"function": f} for f in json.loads(tools_key)]
    body = code_escapes(xg.Grammar.from_json_schema(
        json.dumps(call_schema(tools)), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
    ))
    call = xg.Grammar.concat(
        xg.Grammar.from_ebnf(f"root ::= {json.dumps(CALL_OPEN)}"),
        body,
        xg.Grammar.from_ebnf(f"root ::= {json.dumps(CALL_CLOSE)}"),
    )
    text = xg.Grammar.from_ebnf(TEXT_EBNF)
    grammar = (xg.Grammar.union(call, text) if allow_calls else text) if allow_text else call
    info = xg.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
    compiled = xg.GrammarCompiler(info, max_threads=2).compile_grammar(grammar)
    return GrammarConstraint(compiled, vocab_size)
