"""The agent's six tools (read, write, edit_lines, glob, grep, bash), confined to one workspace.

Design:
- `Workspace.run(name, args)` is the only entry point the agent needs. It never raises: unknown tools,
  bad arguments, refusals (`ToolError`) and OS errors all come back as `ToolResult(ok=False,
  output="error: <one line>")`, because whatever happens is shown to the model as the tool result.
- Arguments are checked against `TOOL_SCHEMAS` (OpenAI function format, shown to the model) by
  `validate_args`, which also fills the defaults. The schemas are the single source of truth.
- Confinement (of the file tools; bash is not sandboxed, it runs with the user's rights once the user
  approves the command): every path argument goes through `Workspace.resolve`, which follows symlinks
  (`os.path.realpath`) and refuses anything that lands outside the root, lies under /proc, holds a
  NUL byte or is over-long. Tools then operate on the resolved path only. Walks (glob, grep) do not
  descend into symlinked directories and drop symlinked files that resolve outside the root. The
  check is made once per call: a process racing the agent to swap a symlink in between is out of
  scope (a bash command's processes are killed before its `run` returns, bar the limitation below).
- glob follows pathlib's pattern rules (`*`, `?`, `[..]` within a name, `**` across directories),
  except that a trailing `**` also matches files; glob and grep skip .git, node_modules,
  __pycache__ and virtualenvs (.venv, venv, any dir holding pyvenv.cfg) below the searched dir.
- Writes are atomic: a dot-prefixed temp file (`.cctmp.<pid>.<random>`) in the target's directory is
  written, fsynced and `os.replace`d over the target, keeping the old file's mode. A kill -9 leaves
  either the old or the new file, never a mix; a temp file orphaned by a kill is hidden from glob and
  grep and is removed by the next write into that directory (once its writer pid is dead).
- Every output is capped at `result_cap` characters (head + tail, middle elided with a count), so a
  huge file, diff or log cannot blow the model's context. `read` instead stops early and says
  which offset to continue from.
- bash runs `bash -c` in the root, in its own session (process group), stdin from /dev/null, stdout
  and stderr merged, with secrets dropped from its environment unless `pass_secrets=True`. Output is
  read through a bounded head/tail buffer; past `BASH_BYTE_BUDGET` bytes the command is killed, so
  an endless producer costs neither time nor memory. On timeout, and again once the command has
  finished, everything left in its process group is SIGKILLed. Processes that left the group
  (`setsid`, double forks) are found by a unique marker variable (`CONTINUALCODE_BASH_ID`) in their
  /proc/<pid>/environ and killed too. Limitation: a process that drops the marker from its own
  environment before exec (`env -i setsid daemon &`) escapes; so does a process running as another
  user. The search regex in grep runs in-process, so a pathological regex can take long.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import os
import re
import secrets
import select
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

TOOL_NAMES: tuple[str, ...] = ("read", "write", "edit_lines", "glob", "grep", "bash")

SECRET_NAMES = frozenset(
    {"TINKER_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
)
SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv"})
TEMP_PREFIX = ".cctmp."  # atomic-write temp files: .cctmp.<pid>.<random>
MARKER_VAR = "CONTINUALCODE_BASH_ID"
BASH_BYTE_BUDGET = 8 * 2**20  # bash output read before the command is killed
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
BINARY_SNIFF = 8192  # a NUL byte in this many leading bytes means binary
LIST_CAP = 200  # glob results / grep hits shown
LINE_CAP = 2000  # bytes of one line shown by read
HIT_CAP = 300  # chars of one line shown by grep
GREP_MAX_FILE = 5 * 2**20
EDIT_MAX_FILE = 50 * 2**20
WALK_BUDGET = 100_000  # files looked at by one glob/grep


def _fn(name: str, description: str, properties: dict[str, dict[str, Any]], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_PATH = {"type": "string", "description": "Path relative to the workspace root."}
TOOL_SCHEMAS: list[dict] = [
    _fn(
        "read",
        "Read a text file. Returns numbered lines.",
        {
            "path": _PATH,
            "offset": {"type": "integer", "minimum": 1, "default": 1, "description": "First line (1-based)."},
            "limit": {"type": "integer", "minimum": 1, "default": 400, "description": "Max lines."},
        },
        ["path"],
    ),
    _fn(
        "write",
        "Create or overwrite a file with content.",
        {"path": _PATH, "content": {"type": "string", "description": "The whole new file."}},
        ["path", "content"],
    ),
    _fn(
        "edit_lines",
        "Replace lines start_line..end_line (1-based, inclusive) with content. "
        'end_line=start_line-1 inserts before start_line; content="" deletes.',
        {
            "path": _PATH,
            "start_line": {"type": "integer", "minimum": 1},
            "end_line": {"type": "integer", "minimum": 0},
            "content": {"type": "string", "description": "The new lines."},
        },
        ["path", "start_line", "end_line", "content"],
    ),
    _fn(
        "glob",
        "List files matching a glob pattern, e.g. **/*.py.",
        {
            "pattern": {"type": "string"},
            "path": {"type": "string", "default": ".", "description": "Directory to search."},
        },
        ["pattern"],
    ),
    _fn(
        "grep",
        "Search files for a Python regex. Returns path:line: text.",
        {
            "pattern": {"type": "string"},
            "path": {"type": "string", "default": ".", "description": "File or directory."},
            "include": {"type": "string", "description": "Only files matching this glob, e.g. *.py."},
        },
        ["pattern"],
    ),
    _fn(
        "bash",
        "Run a bash command in the workspace root. Returns its output and exit code.",
        {
            "command": {"type": "string"},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "Seconds."},
        },
        ["command"],
    ),
]
_PARAMS: dict[str, dict[str, Any]] = {
    t["function"]["name"]: t["function"]["parameters"] for t in TOOL_SCHEMAS
}


class ToolError(Exception):
    """A refusal/failure whose message is shown to the model as the tool result."""


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # already capped


# ---------------------------------------------------------------------------------------------- helpers


def validate_args(name: str, args: Any) -> dict[str, Any]:
    """Check `args` against the tool's schema and return them with defaults filled in."""
    if not isinstance(name, str) or name not in _PARAMS:
        raise ToolError(f"unknown tool {_q(str(name))}; available tools: {', '.join(TOOL_NAMES)}")
    if not isinstance(args, Mapping):
        raise ToolError(f"arguments of {name} must be a JSON object, got {type(args).__name__}")
    params = _PARAMS[name]
    props: dict[str, dict[str, Any]] = params["properties"]
    for key in args:
        if key not in props:
            raise ToolError(f"unexpected argument {_q(str(key))} for {name} (allowed: {', '.join(props)})")
    out: dict[str, Any] = {}
    for key, spec in props.items():
        value = args.get(key)
        if value is None:
            if key in params["required"]:
                raise ToolError(f"missing required argument {_q(key)} for {name}")
            out[key] = spec.get("default")
            continue
        if spec["type"] == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolError(f"argument {_q(key)} of {name} must be an integer, got {_type(value)}")
            if "minimum" in spec and value < spec["minimum"]:
                raise ToolError(f"argument {_q(key)} of {name} must be >= {spec['minimum']}, got {value}")
            if "maximum" in spec and value > spec["maximum"]:
                raise ToolError(f"argument {_q(key)} of {name} must be <= {spec['maximum']}, got {value}")
        elif not isinstance(value, str):
            raise ToolError(f"argument {_q(key)} of {name} must be a string, got {_type(value)}")
        out[key] = value
    return out


def _type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _q(text: str, limit: int = 120) -> str:
    """Quote a user-supplied string for an error message, shortened."""
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-limit // 2 :]
    return "'" + text.replace("\n", "\\n").replace("\x00", "\\x00") + "'"


def cap_text(text: str, cap: int) -> str:
    """Keep head and tail of `text` so the result has at most `cap` characters."""
    if len(text) <= cap:
        return text
    longest_marker = f"\n[… {len(text)} chars elided …]\n"
    keep = max(cap - len(longest_marker), 0)
    head = keep // 2
    return text[:head] + f"\n[… {len(text) - keep} chars elided …]\n" + text[len(text) - (keep - head) :]


def _clean(text: str) -> str:
    """Make text safe to encode as UTF-8 (undecodable filename bytes become \\xNN escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "failed"


def _split_lines(text: str) -> list[str]:
    """Split on "\\n" only (never on \\r, \\f, \\u2028 ...), keeping line ends: the numbering read shows."""
    if not text:
        return []
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _numbered(lines: list[str], first: int) -> str:
    stripped = (line.rstrip("\n").rstrip("\r") for line in lines)
    return "\n".join(f"{first + i:6}\t{line}" for i, line in enumerate(stripped))


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head[:BINARY_SNIFF]


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(BINARY_SNIFF)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _diff(old: str, new: str, rel: str) -> str:
    if old == new:
        return f"(no changes to {rel})"
    out = []
    for line in difflib.unified_diff(_split_lines(old), _split_lines(new), f"a/{rel}", f"b/{rel}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out).rstrip("\n")


@functools.lru_cache(maxsize=256)
def _compile_glob(pattern: str) -> tuple[str, ...]:
    if pattern.startswith("/"):
        raise ToolError(f"pattern {_q(pattern)} must be relative (put the directory in path)")
    parts = tuple(p for p in pattern.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ToolError(f"pattern {_q(pattern)} must not contain '..'")
    if not parts:
        raise ToolError("pattern is empty")
    return parts


def _glob_match(pat: tuple[str, ...], parts: tuple[str, ...], *, prefix: bool = False) -> bool:
    """Does `parts` match `pat` ('**' = any number of dirs; a trailing '**' also matches files)?
    With prefix=True: could some path below directory `parts` match?"""

    @functools.cache
    def go(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if j == len(parts):
            return prefix or (all(p == "**" for p in pat[i:]) and j > 0)
        if pat[i] == "**":
            return go(i + 1, j) or go(i, j + 1)
        return fnmatch.fnmatchcase(parts[j], pat[i]) and go(i + 1, j + 1)

    return go(0, 0)


def _iter_lines(f: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """Lines of a binary file split on b"\\n": (first LINE_CAP bytes without the newline, bytes cut)."""
    while raw := f.readline(LINE_CAP + 1):
        if raw.endswith(b"\n"):
            yield raw[:-1], 0
            continue
        cut = 0
        if len(raw) > LINE_CAP:  # a long line: skip the rest of it
            cut = len(raw) - LINE_CAP
            raw = raw[:LINE_CAP]
            while more := f.readline(2**20):
                if more.endswith(b"\n"):
                    cut += len(more) - 1
                    break
                cut += len(more)
        yield raw, cut


def _count_rest(f: BinaryIO) -> int:
    """Number of lines from the current position to the end of the file."""
    count, last = 0, b"\n"
    while chunk := f.read(2**20):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


# -------------------------------------------------------------------------------------------- workspace


class Workspace:
    """A directory the tools are confined to, plus the tools themselves."""

    def __init__(
        self, root: Path, *, result_cap: int = 12000, bash_timeout: int = 60, pass_secrets: bool = False
    ) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"workspace root {root} is not a directory")
        if result_cap < 500:
            raise ValueError("result_cap must be at least 500")
        self.result_cap = result_cap
        self.bash_timeout = bash_timeout
        self.pass_secrets = pass_secrets
        root_s = str(self.root)
        self._prefix = root_s if root_s.endswith(os.sep) else root_s + os.sep

    # 1) entry points --------------------------------------------------------------------------------

    def run(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        """Execute one tool call. Never raises."""
        try:
            kwargs = validate_args(name, args)
            ok, output = getattr(self, f"_{name}")(**kwargs)
        except ToolError as e:
            ok, output = False, f"error: {_one_line(str(e))}"
        except OSError as e:
            ok, output = False, f"error: {_one_line(self._os_message(e))}"
        except Exception as e:  # the model must always get an answer
            ok, output = False, f"error: {_one_line(f'{type(e).__name__}: {e}')}"
        return ToolResult(ok, cap_text(_clean(output), self.result_cap))

    def preview(self, name: str, args: Mapping[str, Any]) -> str:
        """What the user sees before approving the call; computed without touching disk. Never raises."""
        try:
            kw = validate_args(name, args)
            if name == "write":
                target = self.resolve(kw["path"])
                rel = self._rel(target)
                if target.is_file() and _is_binary(_head(target)):
                    size, n = target.stat().st_size, len(_split_lines(kw["content"]))
                    text = f"overwrite binary file {rel} ({size} bytes) with {n} lines"
                else:
                    text = _diff(self._read_text_for_edit(target), kw["content"], rel)
            elif name == "edit_lines":
                target = self.resolve(kw["path"])
                old = self._read_text_for_edit(target, must_exist=True)
                new, _ = self._plan_edit(target, old, kw["start_line"], kw["end_line"], kw["content"])
                text = _diff(old, new, self._rel(target))
            elif name == "bash":
                text = f"$ {kw['command']}" + (f"  (timeout {kw['timeout']}s)" if kw["timeout"] else "")
            elif name == "read":
                end = kw["offset"] + kw["limit"] - 1
                text = f"read {self._rel(self.resolve(kw['path']))} (lines {kw['offset']}-{end})"
            elif name == "glob":
                text = f"glob {_q(kw['pattern'])} in {self._rel(self.resolve(kw['path']))}"
            else:
                text = f"grep {_q(kw['pattern'])} in {self._rel(self.resolve(kw['path']))}"
                text += f" (files {_q(kw['include'])})" if kw["include"] else ""
        except ToolError as e:
            text = f"error: {_one_line(str(e))}"
        except OSError as e:
            text = f"error: {_one_line(self._os_message(e))}"
        except Exception as e:
            text = f"error: {_one_line(f'{type(e).__name__}: {e}')}"
        return cap_text(_clean(text), self.result_cap)

    # 2) confinement ---------------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The real path of `path` (relative to the root, symlinks followed); ToolError unless inside."""
        if not isinstance(path, str):
            raise ToolError(f"path must be a string, got {_type(path)}")
        if not path:
            raise ToolError("path is empty")
        if "\x00" in path:
            raise ToolError(f"path {_q(path)} contains a NUL byte")
        raw = os.fsencode(path)
        if len(raw) > MAX_PATH_BYTES:
            raise ToolError(f"path is too long ({len(raw)} bytes; the limit is {MAX_PATH_BYTES})")
        for part in raw.split(b"/"):
            if len(part) > MAX_NAME_BYTES:
                name = _q(os.fsdecode(part), 40)
                raise ToolError(f"name {name} is too long ({len(part)} bytes; the limit is {MAX_NAME_BYTES})")
        expanded = os.path.expanduser(path)
        lexical = os.path.normpath(os.path.join(self.root, expanded))
        real = os.path.realpath(os.path.join(self.root, expanded))
        for p in (lexical, real):
            if p == "/proc" or p.startswith("/proc/"):
                raise ToolError(f"path {_q(path)} is under /proc")
        if not self._inside(real):
            via = " (through a symlink)" if self._inside(lexical) else ""
            raise ToolError(f"path {_q(path)} is outside the workspace{via}")
        return Path(real)

    def _inside(self, p: str) -> bool:
        return p == str(self.root) or p.startswith(self._prefix)

    def _rel(self, p: Path | str) -> str:
        return os.path.relpath(p, self.root)

    def _os_message(self, e: OSError) -> str:
        what = e.strerror or str(e)
        if e.filename is not None:
            name = os.fsdecode(e.filename)
            shown = self._rel(name) if self._inside(os.path.realpath(name)) else os.path.basename(name)
            return f"{what}: {shown}"
        return what

    def _walk_files(
        self, base: Path, pattern: tuple[str, ...] | None = None
    ) -> Iterator[tuple[str, tuple[str, ...], Path]]:
        """(path relative to the root, parts relative to `base`, real path) of the regular files below
        `base`. Skips SKIP_DIRS, virtualenvs, symlinked dirs, our temp files, symlinks leading outside,
        and dirs under which nothing can match `pattern`. Raises _WalkBudget after WALK_BUDGET files."""
        seen = 0
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            below = Path(os.path.relpath(dirpath, base)).parts
            below = () if below == (".",) else below

            def keep(d: str, dirpath: str = dirpath, below: tuple[str, ...] = below) -> bool:
                full = os.path.join(dirpath, d)
                return (
                    d not in SKIP_DIRS
                    and not os.path.islink(full)
                    and not os.path.exists(os.path.join(full, "pyvenv.cfg"))
                    and (pattern is None or _glob_match(pattern, (*below, d), prefix=True))
                )

            dirnames[:] = sorted(d for d in dirnames if keep(d))
            for name in sorted(filenames):
                if name.startswith(TEMP_PREFIX):
                    continue
                seen += 1
                if seen > WALK_BUDGET:
                    raise _WalkBudget
                full = os.path.join(dirpath, name)
                real = os.path.realpath(full)
                if self._inside(real) and os.path.isfile(real):
                    yield self._rel(full), (*below, name), Path(real)

    # 3) the tools: each returns (ok, output) or raises ToolError / OSError ---------------------------

    def _read(self, path: str, offset: int, limit: int) -> tuple[bool, str]:
        target = self.resolve(path)
        rel = self._rel(target)
        if target.is_dir():
            raise ToolError(f"{rel} is a directory (use glob to list its files)")
        if not target.exists():
            raise ToolError(f"{rel} does not exist")
        if not stat.S_ISREG(target.stat().st_mode):
            raise ToolError(f"{rel} is not a regular file")
        budget = self.result_cap - 200
        with open(target, "rb") as f:
            if _is_binary(f.read(BINARY_SNIFF)):
                raise ToolError(f"{rel} is a binary file (NUL byte in its first 8 KiB); not shown")
            f.seek(0)
            shown: list[str] = []
            size, n = 0, 0
            for n, (raw, cut) in enumerate(_iter_lines(f), start=1):
                if n < offset:
                    continue
                text = raw.decode("utf-8", "replace").rstrip("\r")
                line = f"{n:6}\t{text}"
                if cut:
                    line += f" … [line cut: {cut} more bytes]"
                if len(shown) == limit or (shown and size + len(line) + 1 > budget):
                    rest = 1 + _count_rest(f)
                    why = "" if len(shown) == limit else "output cap reached; "
                    shown.append(f"[{why}{rest} more lines; use offset={n} to continue]")
                    return True, "\n".join(shown)
                shown.append(line)
                size += len(line) + 1
        if not shown:
            if n == 0 and offset == 1:
                return True, f"({rel} is empty)"
            raise ToolError(f"offset {offset} is past the end: {rel} has {n} lines")
        return True, "\n".join(shown)

    def _write(self, path: str, content: str) -> tuple[bool, str]:
        target = self.resolve(path)
        rel = self._rel(target)
        if target.is_dir():
            raise ToolError(f"{rel} is a directory")
        if path.endswith("/"):
            raise ToolError(f"path {_q(path)} ends with '/'; give a file name")
        existed = target.exists()
        self._atomic_write(target, _encode(content))
        n = len(_split_lines(content))
        return True, f"wrote {n} line{'s' * (n != 1)} to {rel}" + ("" if existed else " (new file)")

    def _edit_lines(self, path: str, start_line: int, end_line: int, content: str) -> tuple[bool, str]:
        target = self.resolve(path)
        old = self._read_text_for_edit(target, must_exist=True)
        new, summary = self._plan_edit(target, old, start_line, end_line, content)
        self._atomic_write(target, _encode(new))
        # show a little context around the change, numbered as read would
        lines = _split_lines(new)
        added = len(_split_lines(content))
        lo = max(1, start_line - 2)
        hi = min(len(lines), start_line + max(added, 1) + 1)
        context = _numbered(lines[lo - 1 : hi], lo) if lines else "(file is now empty)"
        return True, f"{summary}\n{context}"

    def _glob(self, pattern: str, path: str) -> tuple[bool, str]:
        pat = _compile_glob(pattern)
        base = self.resolve(path)
        if not base.is_dir():
            raise ToolError(f"{self._rel(base)} is not a directory")
        hits: list[str] = []
        note = ""
        try:
            for rel, below, _ in self._walk_files(base, pat):
                if _glob_match(pat, below):
                    hits.append(rel)
        except _WalkBudget:
            note = f"\n[stopped after {WALK_BUDGET} files; narrow the path]"
        if not hits:
            return True, f"no files match {_q(pattern)} in {self._rel(base)}{note}"
        hits.sort()
        more = f"\n… and {len(hits) - LIST_CAP} more" if len(hits) > LIST_CAP else ""
        return True, "\n".join(hits[:LIST_CAP]) + more + note

    def _grep(self, pattern: str, path: str, include: str | None) -> tuple[bool, str]:
        try:
            regex = re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as e:
            raise ToolError(f"invalid regex: {e}") from None
        base = self.resolve(path)
        if not base.exists():
            raise ToolError(f"{self._rel(base)} does not exist")
        note = ""
        if base.is_dir():
            files: list[tuple[str, Path]] = []
            try:
                for rel, below, real in self._walk_files(base):
                    if include is None or _include_match(include, below):
                        files.append((rel, real))
            except _WalkBudget:
                note = f"\n[stopped after {WALK_BUDGET} files; narrow the path]"
            files.sort()
        elif stat.S_ISREG(base.stat().st_mode):
            files = [(self._rel(base), base)]
        else:
            raise ToolError(f"{self._rel(base)} is not a regular file")
        hits: list[str] = []
        total, skipped = 0, 0
        for rel, real in files:
            try:
                if real.stat().st_size > GREP_MAX_FILE:
                    skipped += 1
                    continue
                data = real.read_bytes()
            except OSError:
                continue
            if _is_binary(data):
                if len(files) == 1 and not base.is_dir():
                    raise ToolError(f"{rel} is a binary file")
                continue
            for n, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
                if regex.search(line):
                    total += 1
                    if len(hits) < LIST_CAP:
                        text = line.rstrip("\r")
                        text = text[:HIT_CAP] + "…" if len(text) > HIT_CAP else text
                        hits.append(f"{rel}:{n}: {text}")
        if skipped:
            note += f"\n[skipped {skipped} files over {GREP_MAX_FILE // 2**20} MiB]"
        if not hits:
            return True, f"no matches for {_q(pattern)} in {self._rel(base)}{note}"
        more = f"\n… and {total - LIST_CAP} more matches" if total > LIST_CAP else ""
        return True, "\n".join(hits) + more + note

    def _bash(self, command: str, timeout: int | None) -> tuple[bool, str]:
        timeout = timeout or self.bash_timeout
        marker = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if self.pass_secrets or not _is_secret(k)}
        env[MARKER_VAR] = marker
        env["PWD"] = str(self.root)
        half = max((self.result_cap - 200) // 2, 0)
        out = _HeadTail(half, half)
        # 1) start the command in its own session, reading its merged output as it comes
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        start = time.monotonic()
        deadline, exited_at, last_data = start + timeout, None, start
        status = ""
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    status = f"timed out after {timeout}s, killed"
                    break
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and (now - last_data > 0.1 or now - exited_at > 1.0):
                    break  # bash is done; whatever still holds the pipe is a leftover
                ready, _, _ = select.select([fd], [], [], min(deadline - now, 0.05))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:  # every writer closed the pipe; let bash finish its exit before the kill
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=max(deadline - time.monotonic(), 0))
                    if proc.returncode is None:
                        status = f"timed out after {timeout}s, killed"
                    break
                last_data = time.monotonic()
                out.feed(chunk)
                if out.total > BASH_BYTE_BUDGET:
                    status = f"output exceeded {BASH_BYTE_BUDGET // 2**20} MiB, killed"
                    break
        finally:
            # 2) kill whatever is left: the process group, then anything carrying the marker
            _kill_group(proc.pid)
            _kill_marked(marker)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            # 3) drain what the dead processes left in the pipe (bounded: an escaped writer may stay)
            _drain(fd, out, until=time.monotonic() + 0.5)
            proc.stdout.close()
        code = proc.returncode
        if not status:
            status = f"exit code {code}"
            if code is not None and code < 0:
                status += f" (killed by {signal.Signals(-code).name})"
        text = out.text()
        body = text if text else "(no output)"
        return (not status.startswith(("timed", "output")) and code == 0), f"{body}\n[{status}]"

    # 4) file plumbing ------------------------------------------------------------------------------

    def _read_text_for_edit(self, target: Path, *, must_exist: bool = False) -> str:
        rel = self._rel(target)
        if not target.exists():
            if must_exist:
                raise ToolError(f"{rel} does not exist (use write to create it)")
            return ""
        if target.is_dir():
            raise ToolError(f"{rel} is a directory")
        st = target.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{rel} is not a regular file")
        if st.st_size > EDIT_MAX_FILE:
            raise ToolError(f"{rel} is too large to edit ({st.st_size} bytes)")
        data = target.read_bytes()
        if _is_binary(data):
            raise ToolError(f"{rel} is a binary file")
        return data.decode("utf-8", "surrogateescape")  # bytes outside the edit survive unchanged

    def _plan_edit(self, target: Path, old: str, start: int, end: int, content: str) -> tuple[str, str]:
        """The file's new text after replacing lines start..end with content, and a one-line summary."""
        rel = self._rel(target)
        lines = _split_lines(old)
        n = len(lines)
        append_hint = f"(use start_line={n + 1}, end_line={n} to append)"
        if start > n + 1:
            raise ToolError(f"start_line {start} is past the end: {rel} has {n} lines {append_hint}")
        if end > n:
            raise ToolError(f"end_line {end} is past the end: {rel} has {n} lines {append_hint}")
        if end < start - 1:
            raise ToolError(
                f"end_line {end} is before start_line {start} "
                f"(use end_line={start - 1} to insert before line {start}; {rel} has {n} lines)"
            )
        eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        new_lines = _split_lines(content)
        if eol == "\r\n":
            new_lines = [
                ln.removesuffix("\r\n").removesuffix("\n") + eol if ln.endswith("\n") else ln
                for ln in new_lines
            ]
        # content's last line gets a newline before following lines, and when the file ended with one
        ends_open = new_lines and not new_lines[-1].endswith("\n")
        if ends_open and (end < n or not lines or lines[-1].endswith("\n")):
            new_lines[-1] += eol
        result = lines[: start - 1] + new_lines + lines[end:]
        for i in range(len(result) - 1):  # never merge two lines (a file without a final newline)
            if not result[i].endswith("\n"):
                result[i] += eol
        k, now = len(new_lines), len(result)
        lines_word = f"{k} line{'s' * (k != 1)}"
        if not new_lines:
            what = f"deleted lines {start}-{end} of {rel}" if end >= start else f"no change to {rel}"
        elif end < start:
            where = "appended" if start == n + 1 else f"inserted before line {start} of"
            what = f"{where} {rel}: {lines_word}"
        else:
            what = f"replaced lines {start}-{end} of {rel} with {lines_word}"
        return "".join(result), f"{what} (now {now} line{'s' * (now != 1)})"

    def _atomic_write(self, target: Path, data: bytes) -> None:
        """Write via a temp file in the same directory + fsync + os.replace; keep the old mode."""
        parent = target.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(parent)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        tmp = parent / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


class _WalkBudget(Exception):
    """A glob/grep walk looked at WALK_BUDGET files."""


class _HeadTail:
    """Keeps the first `head` and last `tail` bytes of a stream, counting the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_cap, self.tail_cap = head, tail
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: -self.tail_cap]

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_cap :]) if self.tail_cap else b""
        elided = self.total - len(self.head) - len(tail)
        mid = f"\n[… {elided} bytes elided …]\n" if elided else ""
        text = bytes(self.head).decode("utf-8", "replace") + mid + tail.decode("utf-8", "replace")
        return text.rstrip("\n")


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ToolError("content is not valid Unicode text (lone surrogate)") from None


def _include_match(include: str, below: tuple[str, ...]) -> bool:
    if "/" in include:
        return _glob_match(_compile_glob(include), below)
    return fnmatch.fnmatchcase(below[-1], include)


def _is_secret(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES)


def _remove_orphans(directory: Path) -> None:
    """Delete temp files left in `directory` by writers that died mid-write (kill -9)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment carries this command's marker (those that left the
    process group with setsid or a double fork); repeat while new ones appear (forks in flight)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    for _ in range(20):
        found = False
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            if pid == me:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\x00"):
                found = True
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def _drain(fd: int, out: _HeadTail, *, until: float) -> None:
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk or out.total > BASH_BYTE_BUDGET:
            return
        out.feed(chunk)
