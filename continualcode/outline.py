"""The definitions of a project's Python files, as a short map for the model's first turn.

Why: a small model told "which function converts CamelCase to snake_case?" read a 426-line file
80 lines at a time from the top (its regex tables) and answered before it reached `underscore`;
told to fix `humanize`, it paged through the file for 12 turns.  A map of every class and function
with its line and the first line of its docstring (what aider calls a repo map) lets it name the
function, or read the right lines, in one step.

Pure: source text in, lines of text out (`context.project_overview` walks the files).  The map
shrinks to fit a budget in steps, each keeping every definition as long as it can: first method
docstrings go, then all docstrings, then signatures, then private methods, and only then is it
cut, with a line saying how many definitions were left out.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

# how every map is introduced to the model (the first task's overview, a read's outline, the worked example)
LEGEND = "(line: name(arguments) \u2014 first line of the docstring):"
DOC_CHARS = 64  # of a docstring's first line
SIGNATURE_CHARS = 48


@dataclass(frozen=True)
class Definition:
    line: int
    kind: str  # "class" | "def"
    name: str
    depth: int  # 0 top level, 1 a method (or a nested class's member), ...
    signature: str  # "(word, uppercase_first_letter=True)", "" for a class without bases
    doc: str  # the docstring's first non-empty line, cut to DOC_CHARS ("" when none)

    @property
    def private(self) -> bool:
        return self.name.startswith("_") and not self.name.startswith("__")


def definitions(source: str) -> list[Definition]:
    """The classes and functions of a Python source in line order (nested ones in their classes; none
    inside function bodies).  [] for a file that does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out: list[Definition] = []

    def visit(body: Sequence[ast.stmt], depth: int) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append(Definition(node.lineno, "def", node.name, depth, _signature(node.args), _doc(node)))
            elif isinstance(node, ast.ClassDef):
                bases = ", ".join(_unparse(b) for b in node.bases)
                out.append(Definition(node.lineno, "class", node.name, depth, f"({bases})" if bases else "",
                                      _doc(node)))
                visit(node.body, depth + 1)

    visit(tree.body, 0)
    return out


def render(files: Sequence[tuple[str, Sequence[Definition]]], budget: int) -> str:
    """The map of (path, definitions) pairs in at most `budget` characters (see the module docstring);
    "" when no file has a definition."""
    files = [(path, defs) for path, defs in files if defs]
    if not files:
        return ""
    for level in range(5):
        text = "\n".join(_file_block(path, defs, level) for path, defs in files)
        if len(text) <= budget or level == 4:
            break
    lines = text.split("\n")
    if len(text) <= budget:
        return text
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > budget - 40:
            break
        kept.append(line)
        size += len(line) + 1
    left = sum(1 for line in lines[len(kept):] if line.startswith(" "))
    return "\n".join(kept) + f"\n… {left} more definitions (grep 'def NAME' or 'class NAME' to find one)"


def _file_block(path: str, defs: Sequence[Definition], level: int) -> str:
    """One file's lines at a shrink level: 0 all, 1 no method docstrings, 2 no docstrings, 3 no
    signatures, 4 no private methods."""
    rows = [path]
    for d in defs:
        if level >= 4 and d.depth > 0 and d.private:
            continue
        head = f"{'  ' * (d.depth + 1)}{d.line}: {d.kind} {d.name}"
        if level < 3:
            head += d.signature
        if d.doc and (level == 0 or (level == 1 and d.depth == 0)):
            head += f" — {d.doc}"
        rows.append(head)
    return "\n".join(rows)


def _signature(args: ast.arguments) -> str:
    names = [a.arg for a in (*args.posonlyargs, *args.args) if a.arg not in ("self", "cls")]
    if args.vararg:
        names.append("*" + args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append("**" + args.kwarg.arg)
    text = ", ".join(names)
    return f"({text if len(text) <= SIGNATURE_CHARS else text[:SIGNATURE_CHARS - 1] + '…'})"


def _doc(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    doc = ast.get_docstring(node, clean=True) or ""
    first = next((line.strip() for line in doc.splitlines() if line.strip()), "")
    return first if len(first) <= DOC_CHARS else first[:DOC_CHARS - 1] + "…"


def _unparse(node: ast.expr) -> str:
    try:
        return ast.unparse(node)
    except (ValueError, RecursionError):
        return "…"
