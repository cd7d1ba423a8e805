"""More prompts for one correction: so that a correction teaches a habit, not one answer.

Context distillation (Askell et al. 2021) over more prompts than the one the user denied: the
teacher (the same model with the correction in context) is distilled into the student on other
tasks of the same project, where the correction should hold too.  Two sources:
- the project's earlier tasks (what the user actually asks here), handed in by the caller (the
  app reads them from the project's journals; the learning benchmark from its earlier scenario
  tasks, never from the tasks it measures on);
- paraphrases of the denied task that the model writes itself (`paraphrases`): other requests of
  the same kind about other files or functions.
Pure text in, text out; the learner turns each prompt into a short on-policy sample and one more
distillation example.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from continualcode.records import Message

PARAPHRASE_PROMPT = ("Write {n} requests of the same kind as the given one, about other files and names in the "
                     "same project. A numbered list, one request per line.\n\nRequest: {task}")
# one worked example: without it Qwen2.5-Coder-0.5B repeated the request n times
EXAMPLE_TASK = "Rename the function load to load_config in settings.py."
EXAMPLE_LIST = ("1. Rename the class Item to Product in models.py.\n2. Rename the variable n to count in stats.py.\n"
                "3. Rename the method run to start in server.py.")
MAX_PROMPT_CHARS = 300
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
EXAMPLE_ITEMS = tuple(m.group(1) for line in EXAMPLE_LIST.splitlines() if (m := _NUMBERED.match(line)))


def paraphrases(backend: Any, renderer: Any, task: str, n: int, *, seed: int | None = None,
                temperature: float = 0.7) -> list[str]:
    """Up to `n` requests like `task`, written by the model (unconstrained, no tools in its prompt)."""
    if n <= 0 or not task.strip():
        return []
    chat = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": PARAPHRASE_PROMPT.format(task=EXAMPLE_TASK, n=3)},
            {"role": "assistant", "content": EXAMPLE_LIST},
            {"role": "user", "content": PARAPHRASE_PROMPT.format(task=task.strip(), n=n)}]
    text = renderer.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + "1."
    prompt = list(renderer.tok.encode(text, add_special_tokens=False))  # the reply starts the list: "1."
    sample = backend.sample(prompt, max_tokens=40 * n + 16, temperature=temperature, top_p=0.95,
                            stop=renderer.stop_ids, seed=seed)
    return parse_lines("1." + renderer.decode(sample.tokens), n, exclude=(task, EXAMPLE_TASK, *EXAMPLE_ITEMS))


def parse_lines(text: str, n: int, *, exclude: Sequence[str] = ()) -> list[str]:
    """The first `n` distinct usable requests of a numbered list in a model's reply: numbered lines only,
    their numbers stripped; no headers (ending in ':'), no code, nothing over MAX_PROMPT_CHARS, none of
    `exclude` (the task itself, and the worked example's lines: the 0.5B model copied them for "run
    greet.py", which would teach the correction on requests about files no project has)."""
    out: list[str] = []
    seen = {_norm(x) for x in exclude}
    for line in text.splitlines():
        m = _NUMBERED.match(line)
        if m is None:
            continue
        item = m.group(1).strip().strip('"').strip("*").strip()
        if (len(item) < 12 or len(item) > MAX_PROMPT_CHARS or item.endswith(":") or "<" in item
                or item.startswith("`") or _norm(item) in seen):
            continue
        seen.add(_norm(item))
        out.append(item)
        if len(out) == n:
            break
    return out


def task_of(messages: Sequence[Message]) -> str:
    """The user's task in a conversation: its last user message that is not a tool result or a reply to
    an error or a denial."""
    for m in reversed(messages):
        if m.role == "user" and not m.content.startswith(("error: ", "Denied", "The user denied")):
            return m.content
    return ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!?")
