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

PARAPHRASE_PROMPT = (
    "A user of a coding assistant made this request in their project:\n\n{task}\n\n"
    "Write {n} different requests of the same kind that the same user might make in the same project, "
    "about other files, functions or names. One request per line. No numbering, no explanations."
)
MAX_PROMPT_CHARS = 300


def paraphrases(backend: Any, renderer: Any, task: str, n: int, *, seed: int | None = None,
                temperature: float = 0.7) -> list[str]:
    """Up to `n` requests like `task`, written by the model (unconstrained, no tools in its prompt)."""
    if n <= 0 or not task.strip():
        return []
    chat = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": PARAPHRASE_PROMPT.format(task=task.strip(), n=n)}]
    text = renderer.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    prompt = list(renderer.tok.encode(text, add_special_tokens=False))
    sample = backend.sample(prompt, max_tokens=40 * n + 16, temperature=temperature, top_p=0.95,
                            stop=renderer.stop_ids, seed=seed)
    return parse_lines(renderer.decode(sample.tokens), n, exclude=task)


def parse_lines(text: str, n: int, *, exclude: str = "") -> list[str]:
    """The first `n` distinct usable request lines of a model's reply (bullets and numbers stripped)."""
    out: list[str] = []
    seen = {_norm(exclude)}
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"')
        if len(line) < 8 or len(line) > MAX_PROMPT_CHARS or "<" in line or _norm(line) in seen:
            continue
        seen.add(_norm(line))
        out.append(line)
        if len(out) == n:
            break
    return out


def task_of(messages: Sequence[Message]) -> str:
    """The user's task in a conversation: its last user message that is not a tool result or a reply to
    an error or a denial."""
    for m in reversed(messages):
        if m.role == "user" and not m.content.startswith(("error: ", "Denied.", "The user denied")):
            return m.content
    return ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())
