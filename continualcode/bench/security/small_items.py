"""The smaller tool findings of issue 17 (writing to a FIFO, grep `$` on CRLF lines, a UTF-8 BOM kept
by edit_lines, NUL bytes and lone surrogates in arguments) and the bash timeout clamp of issue 15;
one row each, judged from the tools' output and the files on disk.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from continualcode.tools import Workspace


def smaller_checks(root: Path) -> list[dict[str, Any]]:
    """The smaller tool findings of issue 17 (and the bash timeout clamp of issue 15), one row each."""
    root.mkdir(parents=True)
    ws = Workspace(root, bash_timeout=1)
    rows = []

    def check(name: str, passed: bool, observed: str) -> None:
        rows.append({"check": name, "passed": bool(passed), "observed": observed[:120]})

    os.mkfifo(root / "pipe")
    pre = ws.preview("write", {"path": "pipe", "content": "x\n"})
    res = ws.run("write", {"path": "pipe", "content": "x\n"})
    check("write to a FIFO: refused by preview and run, FIFO kept", "not a regular file" in pre and not res.ok
          and stat.S_ISFIFO((root / "pipe").lstat().st_mode), res.output)
    (root / "dos.txt").write_bytes(b"alpha\r\nbeta;\r\n")
    out = ws.run("grep", {"pattern": ";$", "path": "dos.txt"}).output
    check("grep '$' on CRLF lines", out == "dos.txt:2: beta;", out)
    (root / "bom.py").write_bytes(b"\xef\xbb\xbfx = 1\ny = 2\n")
    ws.run("edit_lines", {"path": "bom.py", "start_line": 1, "end_line": 1, "content": "x = 10\n"})
    data = (root / "bom.py").read_bytes()
    check("UTF-8 BOM kept when line 1 is replaced", data == b"\xef\xbb\xbfx = 10\ny = 2\n", repr(data))
    for name, args in (("bash", {"command": "echo a\x00b"}), ("bash", {"command": "echo \ud800"}),
                       ("read", {"path": "\ud800"}), ("write", {"path": "x", "content": "\udfff"})):
        out, pre = ws.run(name, args).output, ws.preview(name, args)
        clear = all(t.startswith("error: ") and "\n" not in t and "Error:" not in t for t in (out, pre))
        check(f"{name} with {'NUL' if chr(0) in str(args) else 'a lone surrogate'}: one clear line (run and preview)",
              clear, out)
    pre = ws.preview("bash", {"command": "sleep 5", "timeout": 3600})
    t = time.monotonic()
    out = ws.run("bash", {"command": "sleep 5", "timeout": 3600}).output
    check("bash timeout=3600 clamped to bash_timeout=1 (preview and run)",
          pre.endswith("(timeout 1s, asked 3600s)") and "timed out after 1s" in out and time.monotonic() - t < 4, pre)
    return rows
