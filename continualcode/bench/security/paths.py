"""Path attacks: every path-taking tool (read, write, edit_lines, glob, grep) against `..`, absolute
paths, symlinks leading out, /proc, over-long names, NUL bytes, non-UTF-8 names and `~`; one row per
(tool, attack).

A row is safe when the tool refused what it must refuse, no secret's text came back and nothing
outside the workspace changed (judged from a snapshot of the throwaway directory, not from the
tool's own word). Only `continualcode.tools` is exercised.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import SECRET, env, tree
from continualcode.tools import Workspace

PATH_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "read": lambda p: {"path": p},
    "write": lambda p: {"path": p, "content": "pwned\n"},
    "edit_lines": lambda p: {"path": p, "start_line": 1, "end_line": 1, "content": "pwned\n"},
    "glob": lambda p: {"pattern": "**/*", "path": p},
    "grep": lambda p: {"pattern": "SECRET", "path": p},
}


def path_attacks(base: Path) -> list[dict[str, Any]]:
    """Every path-taking tool against every attack; one row each."""
    root, outside, home = base / "ws", base / "outside", base / "home"
    for d in (root / "inner", outside / "sub", home):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "sub" / "secret.txt").write_text(SECRET + "\n")
    (home / ".bashrc").write_text(SECRET + "\n")
    (root / "file_link").symlink_to(outside / "secret.txt")
    (root / "dir_link").symlink_to(outside)
    (root / "inner" / "up").symlink_to("../..")
    (root / "inside.txt").write_text("inside\n")
    non_utf8 = os.fsdecode(b"caf\xe9.txt")
    (root / non_utf8).write_text("inside\n")
    # (name, path, must_refuse): the last two are legitimate and must work without escaping
    attacks: list[tuple[str, str, bool]] = [
        ("dotdot", "../outside/secret.txt", True),
        ("dotdot_dir", "../outside", True),
        ("absolute_outside", str(outside / "secret.txt"), True),
        ("file_symlink_out", "file_link", True),
        ("dir_symlink_out", "dir_link/secret.txt", True),
        ("dir_symlink_new_file", "dir_link/new.txt", True),
        ("dir_symlink_itself", "dir_link", True),
        ("nested_symlink_up", "inner/up/outside/secret.txt", True),
        ("proc_self_root", f"/proc/self/root{outside}/secret.txt", True),
        ("proc_self_root_inside", f"/proc/self/root{root}/inside.txt", True),
        ("proc_environ", "/proc/self/environ", True),
        ("long_name", "a" * 300, True),
        ("long_path", "/".join(["d" * 200] * 25), True),
        ("nul_byte", "inside.txt\x00/../../outside/secret.txt", True),
        ("non_utf8_escape", "../" + os.fsdecode(b"\xff\xfe"), True),
        ("tilde_home", "~/.bashrc", True),
        ("tilde_dir", "~", True),
        ("non_utf8_inside", non_utf8, False),
        ("absolute_inside", str(root / "inside.txt"), False),
    ]
    rows = []
    with env(HOME=str(home)):
        for tool, make_args in PATH_TOOLS.items():
            for name, path, must_refuse in attacks:
                rows.append(_attack(root, base, tool, name, make_args(path), must_refuse))
        patterns = {"pattern_dotdot": "../*", "pattern_absolute": "/etc/*", "pattern_deep": "**/../../o/*"}
        for name, pattern in patterns.items():
            rows.append(_attack(root, base, "glob", name, {"pattern": pattern}, True))
    return rows


def _attack(root: Path, base: Path, tool: str, name: str, args: dict[str, Any], must_refuse: bool) -> dict:
    before = tree(base, skip=root)
    res = Workspace(root).run(tool, args)
    leaked = SECRET in res.output
    modified = tree(base, skip=root) != before
    refused = not res.ok
    safe = (refused or not must_refuse) and not leaked and not modified
    message = res.output.splitlines()[0].replace(str(base), "$BASE")[:160] if res.output else ""
    return {
        "tool": tool,
        "attack": name,
        "must_refuse": must_refuse,
        "refused": refused,
        "leaked": leaked,
        "modified_outside": modified,
        "safe": safe,
        "message": message,
    }
