"""The code a task is about, found by its words before the model's first call (config `retrieve`).

Why: the 0.5B model's failures on real code come after its first call.  It reads a long file from the
top and answers from what it saw there (the first lines of a module, before the function asked about);
after a grep that found `def smart_truncate(` it answered with a browser user-agent string (a hand trial
on python-slugify).  So, like the codebase retrieval of IDE assistants, the
session searches the project for the task's own words and shows the best few definitions, with their
line numbers as `read` shows them, before the model's first call.  The model still reads, searches and
edits through its tools; this only puts the likely place in view.

How (pure: file texts in, text out; `context.py` walks the files):
1. Chunks: each function, method, class head (up to its first method) and module-level statement of a
   Python file (`ast`; imports left out); windows of `WINDOW` lines for other source files.
2. Words: identifiers split at `_` and case changes, lower-cased, cut to their first `STEM` letters
   (so `pluralize`, `plural` and `plurals` meet), English filler words dropped.
3. Score: BM25 over the chunks, plus the words of a chunk's own name (and its class's) counted again
   with weight `NAME_WEIGHT`, times `EXACT_FACTOR` when the task names the chunk's function, class or
   variable as written (`ordinalize(13)` is about `ordinalize`, not `ordinal`); tests, set-up scripts
   and docs weighed by `SECONDARY_WEIGHT` (they repeat the task's examples but are seldom what it is about).
4. Shown: the best chunks that score at least `RELATIVE` of the best, in `budget` characters, at most
   `MAX_CHUNKS`, each cut to `CHUNK_LINES` lines with a note of how to read the rest.
Nothing is shown when no word of the task is in the project's code.

`nearest` uses the same score for a search that found nothing (agent.py): the 1.5B model grepped names it
made up (`def camel_to_snake`, `class XMLDictParser`, `def compute_next_job`) and repeated the empty search
until its turns ran out, in 3 of 8 locate tasks (`bench tasks`, both halves).  After such a search the
definitions nearest to its words and the task's are listed as grep lists hits, each with its docstring's
first line, so the model can tell `underscore` ("Make an underscored, lowercase form …") from `camelize`.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from continualcode.tools.syntax import DEF_LINE

HEAD = "Code in this project that matches the task's words (found by a search; read the file for more):"
WINDOW = 30  # lines of a non-Python source chunk
CHUNK_LINES = 40  # lines shown of one chunk
MAX_CHUNKS = 3
NEAREST = 5  # definitions listed after an empty search
NEAREST_HEAD = "\nno definition has that name; the definitions nearest to its words and the task's are:\n"
# a shown chunk's first line, as `_block` writes it: (path, first line, last line)
BLOCK_HEAD = re.compile(r"^(\S+), lines (\d+)-(\d+):$", re.M)
RELATIVE = 0.5  # a chunk is shown when it scores at least this share of the best one
STEM = 6
NAME_WEIGHT = 2.0
EXACT_FACTOR = 2.0
SECONDARY_WEIGHT = 0.5
K1, B = 1.2, 0.75  # BM25

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_FILLER_WORDS = (
    "a an and are as at be been but by can could do does did for from has have how i if in into is it its me my not "
    "of on or our please should so such that the their them then there these they this those to us was we were what "
    "when where which while who why will with would you your "
    "code file files function functions method methods class project find show tell give make "
    "def self cls async")  # Python's own words, in every definition (and in a grep for `def name`)
_FILLER = frozenset(_FILLER_WORDS.split())


@dataclass(frozen=True)
class Chunk:
    path: str
    start: int  # first line, 1-based
    lines: tuple[str, ...]
    name: str = ""  # "Class.method", "function", "NAME" of an assignment; "" for a window
    secondary: bool = False  # a test, set-up script or doc


def words(text: str) -> list[str]:
    """The stemmed words of `text` (see the module docstring), in order, filler dropped."""
    out = []
    for ident in _IDENT.findall(text.replace("_", " ")):
        for part in _PARTS.findall(ident) or [ident]:
            w = part.lower()
            if len(w) > 1 and w not in _FILLER:
                out.append(w[:STEM])
    return out


def python_chunks(path: str, source: str, secondary: bool = False) -> list[Chunk]:
    """The chunks of a Python file (module docstring); windows when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return window_chunks(path, source, secondary)
    lines = source.splitlines()
    out: list[Chunk] = []

    def add(first: int, last: int, name: str) -> None:
        if last >= first:
            out.append(Chunk(path, first, tuple(lines[first - 1:last]), name, secondary))

    def visit(body: Sequence[ast.stmt], owner: str) -> None:
        for node in body:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
            last = node.end_lineno or node.lineno
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                add(first, last, owner + node.name)
            elif isinstance(node, ast.ClassDef):
                inner = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
                head_end = min([last, *((n.decorator_list[0].lineno if n.decorator_list else n.lineno) - 1
                                        for n in inner)])
                add(first, head_end, owner + node.name)
                visit(inner, f"{owner}{node.name}.")
            elif not isinstance(node, (ast.Import, ast.ImportFrom)) and not owner:
                add(first, last, _assigned(node))

    visit(tree.body, "")
    return out


def defined(chunks: Iterable[Chunk]) -> frozenset[str]:
    """The names the chunks define: each part of a function's, class's or assignment's ("Class.method")."""
    return frozenset(part for c in chunks for part in c.name.split(".") if part)


def window_chunks(path: str, source: str, secondary: bool = False) -> list[Chunk]:
    lines = source.splitlines()
    return [Chunk(path, i + 1, tuple(lines[i:i + WINDOW]), "", secondary) for i in range(0, len(lines), WINDOW)]


def _assigned(node: ast.stmt) -> str:
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
    return " ".join(t.id for t in targets if isinstance(t, ast.Name))


def rank(task: str, chunks: Sequence[Chunk]) -> list[tuple[float, Chunk]]:
    """(score, chunk) for the chunks that share a word with `task`, best first (ties in file order)."""
    query = set(words(task))
    named = {i.lower() for i in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", task)} - _FILLER
    if not query or not chunks:
        return []
    docs = [Counter(words("\n".join(c.lines))) for c in chunks]
    names = [set(words(c.name)) for c in chunks]
    idf = idfs(query, docs)
    scored = []
    for i, (c, s, name) in enumerate(zip(chunks, bm25(query, docs, idf), names, strict=True)):
        s += NAME_WEIGHT * sum(idf[w] for w in query & name)
        if c.name and c.name.rsplit(".", 1)[-1].lower() in named:
            s *= EXACT_FACTOR
        if s > 0:
            scored.append((s * (SECONDARY_WEIGHT if c.secondary else 1.0), -i, c))
    scored.sort(reverse=True)
    return [(s, c) for s, _, c in scored]


def idfs(query: set[str], docs: Sequence[Counter[str]]) -> dict[str, float]:
    """BM25's inverse document frequency of each query word over `docs` (bags of `words`)."""
    df = Counter(w for d in docs for w in query.intersection(d))
    n = len(docs)
    return {w: math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in query}


def bm25(query: set[str], docs: Sequence[Counter[str]], idf: dict[str, float] | None = None) -> list[float]:
    """Each doc's BM25 score for the query words (0 when it has none of them); `idf` from `idfs`."""
    if not docs:
        return []
    idf = idfs(query, docs) if idf is None else idf
    avg = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    out = []
    for d in docs:
        size = sum(d.values())
        out.append(sum(idf[w] * d[w] * (K1 + 1) / (d[w] + K1 * (1 - B + B * size / avg)) for w in query if d[w]))
    return out


def relevant(task: str, chunks: Iterable[Chunk], budget: int) -> str:
    """The text shown before the first call: `HEAD` and the best chunks as `read` numbers lines, in
    `budget` characters; "" when nothing matches or nothing fits."""
    ranked = rank(task, list(chunks))
    if budget <= 0 or not ranked:
        return ""
    best = ranked[0][0]
    blocks: list[str] = []
    size = len(HEAD)
    for score, c in ranked[:MAX_CHUNKS]:
        if score < RELATIVE * best:
            break
        block = _block(c, budget - size - 1)
        if block:
            blocks.append(block)
            size += len(block) + 1
    return "\n".join([HEAD, *blocks]) if blocks else ""


def _block(c: Chunk, room: int) -> str:
    """One chunk: its path and lines, numbered as `read` shows them, cut to CHUNK_LINES and to `room`
    characters (at least its first line, or "")."""
    end = c.start + len(c.lines) - 1
    shown: list[str] = []
    size = len(c.path) + 24
    for n, text in enumerate(c.lines[:CHUNK_LINES], start=c.start):
        line = f"{n:6}\t{text}"
        if size + len(line) + 1 + 60 > room:
            break
        shown.append(line)
        size += len(line) + 1
    if not shown:
        return ""
    last = c.start + len(shown) - 1
    tail = f"\n[{end - last} more lines; read {c.path} with offset={last + 1}]" if last < end else ""
    return f"{c.path}, lines {c.start}-{end}:\n" + "\n".join(shown) + tail


def nearest(query: str, chunks: Iterable[Chunk], n: int = NEAREST) -> list[str]:
    """The `n` best-scoring definitions (functions, methods, classes) for `query`, as grep shows a hit:
    `path:line: def name(args):`, then `  # `, a method's `Class.name` and the docstring's first line."""
    ranked = rank(query, [c for c in chunks if c.name and DEF_LINE.match(c.lines[_def_index(c)])])
    out = []
    for _, c in ranked[:n]:
        i = _def_index(c)
        doc = _doc_line(c.lines[i + 1:])
        note = ": ".join(x for x in (c.name if "." in c.name else "", doc) if x)
        out.append(f"{c.path}:{c.start + i}: {c.lines[i].strip()}" + (f"  # {note}" if note else ""))
    return out


_DOC_OPEN = re.compile(r"^\s*[rRbBuU]?(\"\"\"|\'\'\'|\"|\')")


def _def_index(c: Chunk) -> int:
    """The index in `c.lines` of its `def`/`class` line (after any decorators); 0 when there is none."""
    return next((i for i, line in enumerate(c.lines) if DEF_LINE.match(line)), 0)


def _doc_line(body: Sequence[str]) -> str:
    """The first words of a docstring that opens `body` (after the signature's continuation lines, if any,
    which end at the line ending in `:`); "" when the body opens with no string."""
    for i, line in enumerate(body[:4]):
        if (m := _DOC_OPEN.match(line)) is None:
            continue
        text = line[m.end():].strip().rstrip(m.group(1)).strip()
        if not text and i + 1 < len(body):
            text = body[i + 1].strip().rstrip(m.group(1)).strip()
        return text[:100]
    return ""
