"""Where one definition, written alone over a whole module, goes in that module.

Why: asked to add a function, the 1.5B model writes the function alone with `write`, over the module it
belongs in (`parse_all` over the 1,081 lines of parse.py, `ordinalize` over inflection/__init__.py, a
`class Scheduler:` holding just the new `__len__` over schedule/__init__.py; `bench tasks`, dev split), at
times wrapped the way a web page shows code (`<pre><code>def parse_all(…):<br>    results = []<br>…`).
What it means is the definition, placed: a new function or class after the module's last line, a
function of the same name in place of the old one, new methods at the end of the class of that name.
rails.py proposes that edit instead of the write (the user approves it like any call).

Pure text in, (start_line, end_line, content) out, as `edit_lines` takes them; the workspace checks that
the file still parses afterwards (workspace.py).
"""

from __future__ import annotations

import ast
import html
import re

from continualcode.tools.syntax import DEFINITIONS, INDENT, first_line, reindent

_WRAP = re.compile(r"^\s*(<pre[^>]*>\s*)?(<code[^>]*>)?|(</code>)?\s*(</pre>)?\s*$")
_BREAK = re.compile(r"<br\s*/?>")


def unwrap_html(content: str) -> str:
    """`content` without a web page's code wrapping (`<pre>`, `<code>`, `<br>` line breaks, `&lt;`); the
    text itself when it is not so wrapped."""
    if not content.lstrip().startswith(("<pre", "<code")):
        return content
    return html.unescape(_BREAK.sub("\n", _WRAP.sub("", content)))


def placed(module: str, content: str) -> tuple[int, int, str] | None:
    """(start_line, end_line, content) of the edit that puts the one definition `content` holds where it
    belongs in `module`; None when `content` is not one top-level definition (or a lone method, whose class
    is a guess), when `module` does not parse, or when a class of that name already has one of its methods."""
    try:
        new, old = ast.parse(content), ast.parse(module)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(new.body) != 1 or not isinstance(new.body[0], DEFINITIONS):
        return None
    node = new.body[0]
    if not isinstance(node, ast.ClassDef) and [a.arg for a in node.args.args[:1]] == ["self"]:
        return None
    same = next((n for n in old.body if isinstance(n, DEFINITIONS) and n.name == node.name), None)
    lines = module.splitlines()
    text = content.strip("\n")
    if same is None:  # a new definition: after the module's last line, two blank lines between
        blank = len(lines) - len(module.rstrip("\n").splitlines())
        return len(lines) + 1, len(lines), "\n" * max(0, 2 - blank) + text
    if not isinstance(same, ast.ClassDef) and not isinstance(node, ast.ClassDef):  # the function rewritten
        return first_line(same), same.end_lineno or same.lineno, text
    if isinstance(same, ast.ClassDef) and isinstance(node, ast.ClassDef):  # new methods for that class
        have = {n.name for n in same.body if isinstance(n, DEFINITIONS)}
        adds = [n for n in node.body if isinstance(n, DEFINITIONS)]
        if not adds or any(n.name in have for n in adds) or adds[0].lineno <= node.lineno:
            return None
        body = "\n".join(content.splitlines()[first_line(adds[0]) - 1:node.end_lineno])
        indent = INDENT.match(lines[same.body[0].lineno - 1]).group()  # type: ignore[union-attr]
        end = same.end_lineno or same.lineno
        return end + 1, end, "\n" + reindent(body, indent)
    return None
