"""What of the conversation the model sees: old tool results and failed replies shortened.

A small model on two cores pays for every prompt token twice: in prefill time, and in attention
drawn away from the task (a long file read three turns ago, a malformed reply it then imitates).
`compact` keeps the conversation's shape and shortens what is stale:
- tool results older than the last `keep_results` that are longer than `keep_chars` become their
  first lines and a note saying how much was elided (the model can read it again).  They are elided
  in batches of `ELIDE_BATCH`: the first `ELIDE_BATCH` of them once `keep_results + ELIDE_BATCH`
  results exist, the next batch four results later, and so on.  Eliding one result per turn changed
  the prompt every turn just past the third-last result, so each turn re-ran ~4k prompt tokens
  (replayed session, 0.5B: KV reuse 34%, 16.4 s median turn); in batches the prefix holds for
  `ELIDE_BATCH` turns at a time, at the price of up to `keep_results + ELIDE_BATCH - 1` whole results;
- a malformed reply and the error message that answered it are dropped once a later reply exists;
- a task marked FRESH (`records.FRESH`, config `earlier_tasks`) starts the model's context with the system
  text just before it (the session lists the project's files again there): earlier messages are left out.
  `recap` is the one line per earlier task (the task and its answer) that such a task may open with.
The journal keeps every message whole; only the rendered prompt is compacted.  The rule depends on
the messages alone, so the student's prompt and its teacher's (the same messages plus a correction)
compact the same way, and a result, once elided, stays elided the same way: the rendered prefix
changes only where a result is elided, so the KV cache before it is reused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from continualcode.outline import LEGEND
from continualcode.records import CALL_OPEN, FRESH, NOTES, TASK, Message, ToolCall
from continualcode.tools.kinds import CODE_SUFFIXES, is_secondary, listing_rank

KEEP_RESULTS = 2
ELIDE_BATCH = 4
KEEP_CHARS = 600
HEAD_LINES = 6
ERROR_PREFIX = "error: "


def compact(messages: Sequence[Message], *, keep_results: int = KEEP_RESULTS,
            keep_chars: int = KEEP_CHARS) -> list[Message]:
    """The conversation as the model should see it (see the module docstring)."""
    messages = current(messages)
    tool_idx = [i for i, m in enumerate(messages) if m.role == "tool"]
    n_stale = (max(0, len(tool_idx) - keep_results) // ELIDE_BATCH) * ELIDE_BATCH
    stale = set(tool_idx[:n_stale])
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    out: list[Message] = []
    for i, m in enumerate(messages):
        pair_end = _failed_pair_end(messages, i)
        if pair_end is not None and last_assistant > pair_end:
            continue  # a malformed reply (or the error answering it) that a later reply superseded
        if i in stale and len(m.content) > keep_chars:
            m = Message(m.role, shorten(m.content), m.meta)
        out.append(m)
    return out


def current(messages: Sequence[Message]) -> list[Message]:
    """The messages from the last task that starts a fresh context, with the system text just before it (the
    project listing the session put there); all of them when no task does."""
    start = max((i for i, m in enumerate(messages) if m.meta.get(FRESH)), default=0)
    while start > 0 and messages[start - 1].role == "system":
        start -= 1
    return list(messages[start:])


def task_meta(messages: Sequence[Message], earlier: str, notes: str) -> dict[str, Any]:
    """The meta of a new task's message after `messages`: marked as a task; with `earlier` (config
    `earlier_tasks`) other than whole and an earlier task in `messages`, the model's context starts at it
    (FRESH), opened by the recap of the earlier tasks when `earlier` is recap; then `notes` (the rules given
    since the session began)."""
    fresh = earlier != "whole" and any(m.meta.get(TASK) for m in messages)
    text = "\n\n".join(filter(None, (recap(messages) if fresh and earlier == "recap" else "", notes)))
    return {TASK: True} | ({FRESH: True} if fresh else {}) | ({NOTES: text} if text else {})


RECAP_HEAD = "Earlier tasks in this session (their changes are in the files):"
RECAP_CHARS = 160


def recap(messages: Sequence[Message]) -> str:
    """One line per task in `messages` (`records.TASK`): the task, then its answer when it ended with one; ""
    when there is none.  What a task that starts a fresh context keeps of the session's earlier tasks."""
    done: list[tuple[str, str]] = []
    task, last = "", None
    for m in [*messages, Message("user", "", {TASK: True})]:
        if m.role == "user" and m.meta.get(TASK):
            if task:  # its answer: the task's last message, when the model wrote it in words
                answered = last is not None and last.role == "assistant" and not last.content.startswith(CALL_OPEN)
                done.append((task, last.content if answered and last else ""))
            task = m.content
        last = m
    if not done:
        return ""
    return "\n".join([RECAP_HEAD, *(f"- {_line(t)} -> {_line(a) if a else '(no answer)'}" for t, a in done)])


def _line(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= RECAP_CHARS else one[:RECAP_CHARS - 1] + "…"


def shorten(text: str, head_lines: int = HEAD_LINES) -> str:
    lines = text.split("\n")
    head = "\n".join(lines[:head_lines])[:KEEP_CHARS // 2]
    rest = len(lines) - min(head_lines, len(lines))
    return f"{head}\n[… {rest} more lines elided to keep the context short; call the tool again to see them]"


def _failed_pair_end(messages: Sequence[Message], i: int) -> int | None:
    """When message i is a malformed assistant reply or the error message that answered it: the index
    of that error message (the pair's end); else None."""
    def is_error(j: int) -> bool:
        return 0 < j < len(messages) and messages[j].role == "user" and messages[j].content.startswith(
            ERROR_PREFIX) and messages[j - 1].role == "assistant"

    if messages[i].role == "assistant" and is_error(i + 1):
        return i + 1
    return i if is_error(i) else None


OVERVIEW_FILES = 40
OVERVIEW_SKIP = (".", "__pycache__")
OUTLINE_CHARS = 3000  # a definitions map (`outline.py`) of ~900 tokens; config repo_map (default 0: none)
OUTLINE_FILES = 60
OUTLINE_FILE_BYTES = 400_000


def _project_files(workspace: Any) -> Iterator[tuple[str, Path]]:
    """(path relative to the root, real path) of the project's files in walk order: hidden files and directories
    and __pycache__ left out; the walk ends quietly at its budget (`paths.WalkBudget`)."""
    from continualcode.tools.paths import WalkBudget

    def descend(below: tuple[str, ...]) -> bool:
        return not below[-1].startswith(OVERVIEW_SKIP)

    try:
        for rel, parts, real in workspace.walk_files(workspace.root, descend):
            if not any(p.startswith(".") for p in parts):
                yield rel, real
    except WalkBudget:
        return


def source_text(path: Path) -> str | None:
    """A source file's text for the definitions map, the task's code or the lines a correction names
    (`referred.py`); None when it is over OUTLINE_FILE_BYTES or cannot be read."""
    try:
        if path.stat().st_size > OUTLINE_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def project_overview(workspace: Any, limit: int = OVERVIEW_FILES, outline_chars: int = 0) -> str:
    """A short listing of the project's files for the model's first turn (real paths, so that it need not
    guess them): source code first, then tests and set-up scripts, then everything else (docs, licences,
    metadata), each group shallowest first; hidden files and directories are left out, and so are empty files
    (nothing to read: both built-in models opened inflection's tasks on its empty `py.typed`, listed last, and
    the 1.5B model wrote a new function into it).  Then, in `outline_chars`
    at most, the classes and functions of its Python files with their lines (`outline.py`): the code
    first, tests and set-up scripts after, as far as the budget goes.  "" for an empty project."""
    files = [rel for rel, real in _project_files(workspace) if not _empty(real)]
    if not files:
        return ""
    files.sort(key=lambda f: (listing_rank(f), f.count("/"), f))
    shown = files[:limit]
    more = f"\n… and {len(files) - limit} more files" if len(files) > limit else ""
    text = "Files in the project (the workspace root is '.'):\n" + "\n".join(shown) + more
    if outline_chars > 0 and (defs := _outline(workspace, files, outline_chars)):
        text += f"\n\nClasses and functions {LEGEND}\n" + defs
    return text


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


RETRIEVE_FILES = 400


def task_overview(workspace: Any, task: str, outline_chars: int = 0, code_chars: int = 0) -> str:
    """What opens a task that starts a context: the project's files (`project_overview`), then, in `code_chars`
    (config `retrieve`), the code that matches the task's words (`relevant_code`); "" for an empty project."""
    listing = project_overview(workspace, outline_chars=outline_chars)
    code = relevant_code(workspace, task, code_chars) if listing else ""
    return f"{listing}\n\n{code}" if code else listing


def relevant_code(workspace: Any, task: str, budget: int) -> str:
    """The project's code that matches the task's words (`retrieve.py`) in `budget` characters; "" for none."""
    from continualcode.retrieve import relevant

    return relevant(task, _code_chunks(workspace), budget) if budget > 0 else ""


def near_miss(workspace: Any, call: ToolCall, ok: bool, output: str, task: str) -> str:
    """What follows a grep that found nothing, not even in its wider searches (`search._elsewhere`): the
    project's definitions nearest to its pattern's words and the task's (`retrieve.nearest`), under
    `NEAREST_HEAD`; "" for any other result, or when no definition shares a word with them."""
    from continualcode.retrieve import NEAREST_HEAD, nearest
    from continualcode.tools.search import FOUND_ELSEWHERE, IS_A_FILE, NO_MATCHES

    if not ok or call.name != "grep" or not output.startswith(NO_MATCHES) or FOUND_ELSEWHERE in output \
            or IS_A_FILE in output:
        return ""
    hits = nearest(f"{call.arguments.get('pattern', '')} {task}", _code_chunks(workspace, python_only=True))
    return NEAREST_HEAD + "\n".join(hits) if hits else ""


def defined_names(workspace: Any) -> frozenset[str]:
    """The names the project's Python files define (functions, classes, methods, module-level assignments)."""
    from continualcode.retrieve import defined

    return defined(_code_chunks(workspace, python_only=True))


def _code_chunks(workspace: Any, python_only: bool = False) -> list[Any]:
    """The chunks (`retrieve.Chunk`) of the project's source files (CODE_SUFFIXES, or Python files alone), at
    most RETRIEVE_FILES of them, none over OUTLINE_FILE_BYTES."""
    chunks: list[Any] = []
    n = 0
    for rel, real in _project_files(workspace):
        if not rel.endswith(".py" if python_only else CODE_SUFFIXES) or (found := _file_chunks(rel, real)) is None:
            continue
        chunks += found
        n += 1
        if n >= RETRIEVE_FILES:
            break
    return chunks


def follow_up(workspace: Any, call: ToolCall, ok: bool, output: str, task: str) -> str:
    """What the rails add after a tool's result: an empty search's nearest definitions (`near_miss`), then a
    note when a failed replace quoted the task's own words (`symptom_note`); "" for most results."""
    return near_miss(workspace, call, ok, output, task) + symptom_note(call, ok, output, task)


SYMPTOM = ("\n{old} is the task's own words (what it reports the code does), not text of {path}: find the code "
           "that produces it (grep for the definition of the function the task names, read it) and change that")


def symptom_note(call: ToolCall, ok: bool, output: str, task: str) -> str:
    """What follows a `replace` that failed because its old text is not in the file but is in the task: the
    model quoted the reported symptom as the code to change (`'13rd'`, `<flag>false</flag>`, `'name' in
    parse('{name}', 'bob')`, in 7 of the 8 fix-and-test tasks of the 1.5B model's transcripts) and repeated
    it; "" for any other result."""
    from continualcode.tools.base import quote
    from continualcode.tools.replace import NOT_IN_FILE

    old = str(call.arguments.get("old_string", "")).strip()
    if ok or call.name != "replace" or not output.removeprefix(ERROR_PREFIX).startswith(NOT_IN_FILE) \
            or len(old) < 3 or old not in task:
        return ""
    return SYMPTOM.format(old=quote(old[:120]), path=call.arguments.get("path", "the file"))


_CHUNKS: dict[tuple[str, str, int, int], list[Any]] = {}  # (file, its name in the project, mtime ns, size)
CHUNK_CACHE = 2000  # files whose chunks are kept: an empty grep's nearest definitions parse only what changed


def _file_chunks(rel: str, real: Path) -> list[Any] | None:
    """One source file's chunks, kept until the file changes (its mtime or size); None for a file `source_text`
    refuses."""
    from continualcode.retrieve import python_chunks, window_chunks

    try:
        st = real.stat()
    except OSError:
        return None
    key = (str(real), rel, st.st_mtime_ns, st.st_size)
    if (kept := _CHUNKS.get(key)) is not None:
        return kept
    if (source := source_text(real)) is None:
        return None
    if len(_CHUNKS) >= CHUNK_CACHE:
        _CHUNKS.clear()
    chunks = (python_chunks if rel.endswith(".py") else window_chunks)(rel, source, is_secondary(rel))
    _CHUNKS[key] = chunks
    return chunks


def _outline(workspace: Any, files: list[str], budget: int) -> str:
    from continualcode.outline import definitions, render

    py = [f for f in files if f.endswith(".py")][:OUTLINE_FILES]
    mapped: dict[bool, list[tuple[str, list[Any]]]] = {False: [], True: []}
    for rel in py:
        if (source := source_text(workspace.root / rel)) is not None:
            mapped[is_secondary(rel)].append((rel, definitions(source)))
    text = render(mapped[False], budget)
    room = budget - len(text) - 1
    if room > 300 and (extra := render(mapped[True], room)):
        text = f"{text}\n{extra}" if text else extra
    return text
