"""Confinement: the one place a path argument becomes a real path, and the file walk glob/grep use.

`ConfinedDir.resolve` follows symlinks and refuses whatever lands outside the root, lies under
/proc, holds a NUL byte or is over-long; tools then operate on the resolved path only. The walk
does not descend into symlinked or skipped directories and drops files that resolve outside the
root. What this module does not do (bash is not confined; the check is made once per call) is in
docs/tools.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from continualcode.fsio import TEMP_PREFIX
from continualcode.tools.base import ToolError, quote, type_name

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv"})
SKIP_SUFFIXES = (".egg-info", ".dist-info")  # packaging metadata: copies of names, never the code
WALK_BUDGET = 100_000  # files looked at by one glob/grep


class WalkBudget(Exception):
    """A glob/grep walk looked at WALK_BUDGET files."""


class ConfinedDir:
    """A directory that path arguments must stay inside (symlinks followed)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"workspace root {root} is not a directory")
        root_s = str(self.root)
        self._prefix = root_s if root_s.endswith(os.sep) else root_s + os.sep

    def resolve(self, path: str) -> Path:
        """The real path of `path` (relative to the root, symlinks followed); ToolError unless inside."""
        if not isinstance(path, str):
            raise ToolError(f"path must be a string, got {type_name(path)}")
        if not path:
            raise ToolError("path is empty")
        if "\x00" in path:
            raise ToolError(f"path {quote(path)} contains a NUL byte")
        raw = os.fsencode(path)
        if len(raw) > MAX_PATH_BYTES:
            raise ToolError(f"path is too long ({len(raw)} bytes; the limit is {MAX_PATH_BYTES})")
        for part in raw.split(b"/"):
            if len(part) > MAX_NAME_BYTES:
                name = quote(os.fsdecode(part), 40)
                raise ToolError(f"name {name} is too long ({len(part)} bytes; the limit is {MAX_NAME_BYTES})")
        expanded = os.path.expanduser(path)
        lexical = os.path.normpath(os.path.join(self.root, expanded))
        real = os.path.realpath(os.path.join(self.root, expanded))
        for p in (lexical, real):
            if p == "/proc" or p.startswith("/proc/"):
                raise ToolError(f"path {quote(path)} is under /proc")
        if not self.inside(real):
            via = " (through a symlink)" if self.inside(lexical) else ""
            raise ToolError(f"path {quote(path)} is outside the workspace{via}")
        return Path(real)

    def inside(self, p: str) -> bool:
        return p == str(self.root) or p.startswith(self._prefix)

    def rel(self, p: Path | str) -> str:
        return os.path.relpath(p, self.root)

    def os_message(self, e: OSError) -> str:
        """An OS error as one message, naming the file relative to the root (or by its bare name
        when outside, so a refusal does not reveal the layout around the workspace)."""
        what = e.strerror or str(e)
        if e.filename is not None:
            name = os.fsdecode(e.filename)
            shown = self.rel(name) if self.inside(os.path.realpath(name)) else os.path.basename(name)
            return f"{what}: {shown}"
        return what

    def walk_files(
        self, base: Path, descend: Callable[[tuple[str, ...]], bool] | None = None
    ) -> Iterator[tuple[str, tuple[str, ...], Path]]:
        """(path relative to the root, parts relative to `base`, real path) of the regular files below
        `base`, in sorted order. Skips SKIP_DIRS, virtualenvs, symlinked dirs, our temp files, symlinks
        leading outside, and dirs for whose parts (relative to `base`) `descend` says no. Raises
        WalkBudget after WALK_BUDGET files."""
        seen = 0
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            below = Path(os.path.relpath(dirpath, base)).parts
            below = () if below == (".",) else below

            def keep(d: str, dirpath: str = dirpath, below: tuple[str, ...] = below) -> bool:
                full = os.path.join(dirpath, d)
                return (
                    d not in SKIP_DIRS
                    and not d.endswith(SKIP_SUFFIXES)
                    and not os.path.islink(full)
                    and not os.path.exists(os.path.join(full, "pyvenv.cfg"))
                    and (descend is None or descend((*below, d)))
                )

            dirnames[:] = sorted(d for d in dirnames if keep(d))
            for name in sorted(filenames):
                if name.startswith(TEMP_PREFIX):
                    continue
                seen += 1
                if seen > WALK_BUDGET:
                    raise WalkBudget
                full = os.path.join(dirpath, name)
                real = os.path.realpath(full)
                if self.inside(real) and os.path.isfile(real):
                    yield self.rel(full), (*below, name), Path(real)


def similar_paths(ws: ConfinedDir, missing: Path, limit: int = 3) -> list[str]:
    """Project files a missing path probably meant (the model guessed `pkg.py` for `pkg/__init__.py`,
    or the wrong directory): same file name elsewhere, a package named like the missing module, then
    close spellings of the name.  At most `limit`; [] when nothing is close."""
    import difflib

    stem, name = missing.stem, missing.name
    files: list[str] = []
    try:
        for rel, _, _ in ws.walk_files(ws.root):
            files.append(rel)
    except WalkBudget:
        pass
    ranked = [f for f in files if os.path.basename(f) == name]
    ranked += [f for f in files if f.endswith(f"{stem}/__init__.py") or f.endswith(f"{stem}/main.py")]
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_name.setdefault(os.path.basename(f), []).append(f)
    for close in difflib.get_close_matches(name, list(by_name), n=limit, cutoff=0.75):
        ranked += by_name[close]
    # a module or package spelled close to the missing name (`scheduler` for the package `schedule`)
    modules: dict[str, list[str]] = {}
    for f in files:
        if f.endswith(".py"):
            base = os.path.dirname(f) if f.endswith("/__init__.py") else f.removesuffix(".py")
            modules.setdefault(os.path.basename(base), []).append(f)
    for close in difflib.get_close_matches(stem, [m for m in modules if m], n=limit, cutoff=0.75):
        ranked += modules[close]
    return list(dict.fromkeys(ranked))[:limit]


def missing(ws: ConfinedDir, target: Path, what: str = "does not exist") -> ToolError:
    """The error for a path that is not there, naming the project files it probably meant."""
    near = similar_paths(ws, target)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return ToolError(f"{ws.rel(target)} {what}{hint}")
