"""Python syntax of a change: whether it would break a file that parses, and the re-indented edit that
would not.

Why: on real code the 0.5B model's edits land in the right lines but break the file
(`IndentationError`, `SyntaxError`) in most edit tasks, and it does not repair them from the warning
within the turn limit.  A change is judged before it is proposed (rails.py re-samples one that breaks
a file that parsed); an `edit_lines` whose only fault is its indentation is shifted to the indentation
of the lines it replaces (or of the block it goes into), kept only if the file then parses.  A line break
inside a one-line string literal is written as `\n` (`escape_string_breaks`), kept on the same terms: the
model writes code into a call's JSON as it reads it, so its `'\n'.join(…)` arrives as a line break.

Pure text in, text out; the workspace supplies the file (workspace.py).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

INDENT = re.compile(r"[ \t]*")
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
DEF_LINE = re.compile(r"^\s*(?:async\s+def|def|class)\s")  # a line that opens a definition (grep hits, chunks)


def syntax_error(text: str, rel: str) -> str | None:
    """For a Python file: why `text` does not compile ("line N: message"), or None (also for other files)."""
    if not rel.endswith((".py", ".pyi")):
        return None
    try:
        compile(text, rel, "exec", dont_inherit=True)
    except SyntaxError as e:
        return f"line {e.lineno}: {e.msg}"
    except (ValueError, RecursionError, MemoryError):  # a NUL byte, absurd nesting
        return None
    return None


def syntax_note(before: str | None, after: str | None) -> str:
    """A warning line when a change leaves a Python file that parsed before unable to parse (no note when
    it did not parse before either: that is not this change's doing)."""
    if after is None or before is not None:
        return ""
    return f"\nwarning: after this change the file no longer parses as Python ({after})"


def redefined(old: str, new: str, rel: str) -> str | None:
    """For a Python file that parses before and after a change: the first function or class the change makes
    defined twice in one scope (the module, or a class body) where it was defined once, said as "NAME at
    lines A and B"; None otherwise.  The later definition silently replaces the earlier one, and the file
    still parses, so no other warning catches it: the 1.5B model, asked why numbers were padded on the wrong
    side, proposed renaming `_padleft` to `_padright` in tabulate (a user trial), which would have left two
    `def _padright`.  A decorated second definition (a property's setter, an overload) is not counted."""
    if not rel.endswith((".py", ".pyi")):
        return None
    before, after = _scopes(old), _scopes(new)
    if before is None or after is None:
        return None
    for scope, names in after.items():
        for name, lines in names.items():
            if len(lines) > 1 and len(before.get(scope, {}).get(name, [])) < len(lines):
                return f"{name} at lines {lines[0]} and {lines[1]}"
    return None


def redefinition_note(old: str, new: str, rel: str) -> str:
    """A warning line when a change defines a function or class a second time in one scope (`redefined`)."""
    twice = redefined(old, new, rel)
    return f"\nwarning: after this change a name is defined twice, the later one replacing the earlier: {twice}" \
        if twice else ""


def _scopes(source: str) -> dict[str, dict[str, list[int]]] | None:
    """Per scope (the module "", or a class's dotted path), each function or class name defined in it, with its
    lines (a decorated definition counted only as the first of its name); None when `source` does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    out: dict[str, dict[str, list[int]]] = {}

    def walk(body: list[ast.stmt], scope: str) -> None:
        for node in body:
            if isinstance(node, DEFINITIONS):
                if not node.decorator_list or not out.get(scope, {}).get(node.name):
                    out.setdefault(scope, {}).setdefault(node.name, []).append(node.lineno)
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{scope}.{node.name}" if scope else node.name)

    walk(tree.body, "")
    return out


def reindent(content: str, indent: str) -> str:
    """`content` shifted so that its least-indented non-blank line starts with `indent`; the lines keep
    their indentation relative to each other, blank lines stay blank."""
    lines = content.split("\n")
    body = [ln for ln in lines if ln.strip()]
    if not body:
        return content
    least = min(len(INDENT.match(ln).group()) for ln in body)  # type: ignore[union-attr]
    return "\n".join(indent + ln[least:] if ln.strip() else ln for ln in lines)


def escape_string_breaks(text: str) -> str:
    """`text` with each line break inside a one-line string literal written as the escape `\\n`: a call's
    JSON `"'\\n'.join(lines)"` arrives as a quote, a line break and a quote (JSON's `\\n`), which no Python
    parses.  A scan of quotes, escapes and comments: triple-quoted strings keep their line breaks, a comment
    its quotes; the caller keeps the result only where the file then parses."""
    out: list[str] = []
    i, quote = 0, ""
    while i < len(text):
        ch = text[i]
        if quote and ch == "\\" and i + 1 < len(text):  # an escape (or a continuation line): as it is
            out.append(text[i:i + 2])
            i += 2
        elif quote and text.startswith(quote, i):
            out.append(quote)
            i, quote = i + len(quote), ""
        elif quote:
            out.append("\\n" if ch == "\n" and len(quote) == 1 else ch)
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out.append(text[i:end])
            i = end
        else:
            if ch in "'\"":
                quote = ch * 3 if text.startswith(ch * 3, i) else ch
                ch = quote
            out.append(ch)
            i += len(ch)
    return "".join(out)


def indent_candidates(lines: list[str], start: int, end: int) -> list[str]:
    """Indentations an edit replacing lines start..end (1-based; end = start-1 inserts) could mean: the
    first replaced line's, the next line's, and the previous non-blank line's (one level deeper after a
    line ending with ':'), in that order, without repeats."""
    def indent_of(i: int) -> str | None:  # 1-based, None past the ends
        return INDENT.match(lines[i - 1]).group() if 1 <= i <= len(lines) else None  # type: ignore[union-attr]

    out: list[str | None] = []
    if end >= start:
        out.append(indent_of(start))
    out.append(indent_of(end + 1))
    prev = next((i for i in range(start - 1, 0, -1) if lines[i - 1].strip()), 0)
    if prev:
        base = indent_of(prev) or ""
        out.append(base + "    " if lines[prev - 1].rstrip().endswith(":") else base)
    return list(dict.fromkeys(x for x in out if x is not None))


def enclosing_start(source: str, line: int) -> int | None:
    """The first line (decorators included) of the innermost function or class of `source` that holds `line`,
    else of the top-level statement that does; None when no statement holds it or `source` does not parse.
    A read from there shows what a grep hit belongs to: the 1.5B model, sent to 5 lines above `'sheep',` at
    line 87 of inflection/__init__.py, never saw the set's name, `UNCOUNTABLES`, 16 lines up."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    node = next((n for n in tree.body if _holds(n, line)), None)
    if node is None:
        return None
    while isinstance(node, DEFINITIONS) and (
            inner := next((n for n in node.body if isinstance(n, DEFINITIONS) and _holds(n, line)), None)):
        node = inner
    return first_line(node)


def _holds(node: ast.stmt, line: int) -> bool:
    return first_line(node) <= line <= (node.end_lineno or node.lineno)


def first_line(node: ast.stmt) -> int:
    """A statement's first line, its decorators' included."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def name_lines(text: str, name: str, rel: str) -> list[int] | None:
    """For a Python file: the lines where `name` occurs as a name of the code (a NAME token: not inside a
    string, docstring or comment); None for other files, or a file that does not tokenize.  A `replace_all`
    is a rename only where the code uses the name: the 1.5B model set it for `"decimal"` -> `"binary"` in
    humanize's filesize.py (a dict key, a docstring and a subscript, no name) and made the dict's `"binary"`
    key twice (a user trial)."""
    if not rel.endswith((".py", ".pyi")):
        return None
    try:
        return [t.start[0] for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type == tokenize.NAME and t.string == name]
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError):
        return None


def docstrings_only(old: str, new: str, rel: str) -> bool:
    """Whether two texts of a Python file (both parsing) differ in docstrings and nothing else of their code:
    their syntax trees differ, and are the same once each module's, class's and function's docstring is left
    out (comments and layout are not in the tree: a change of those alone is not this).  False for other
    files, or when either text does not parse."""
    if old == new or not rel.endswith((".py", ".pyi")):
        return False
    try:
        trees = [ast.parse(text) for text in (old, new)]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if ast.dump(trees[0]) == ast.dump(trees[1]):
        return False
    return ast.dump(_undocumented(trees[0])) == ast.dump(_undocumented(trees[1]))


def _undocumented(tree: ast.Module) -> ast.Module:
    """`tree` with the docstring of each module, class and function taken out of its body (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, *DEFINITIONS)) and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:]
    return tree
