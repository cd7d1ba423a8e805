"""The run entry of `continualcode bench security`: each section in order in one throwaway
directory, timed, then security.json and security.md written into `out_dir`.

It knows the sections only by their functions and their order; what they measure is theirs, what
is counted and how it reads is report.py's.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continualcode.bench.security.adapter_kills import adapter_kill_trials
from continualcode.bench.security.atomicity import kill_trials
from continualcode.bench.security.bash import bash_checks
from continualcode.bench.security.config_refusals import config_refusals
from continualcode.bench.security.env_secrets import secret_checks
from continualcode.bench.security.model_cache import model_cache_checks
from continualcode.bench.security.parser_fuzz import parser_fuzz
from continualcode.bench.security.paths import path_attacks
from continualcode.bench.security.report import assemble, to_markdown
from continualcode.bench.security.sandbox import sandbox_attacks
from continualcode.bench.security.small_items import smaller_checks
from continualcode.bench.security.terminal import terminal_injection


def run(out_dir: Path, *, kills: int = 200, fuzz: int = 100_000, adapter_kills: int = 100) -> dict:
    """Run every measurement; write security.json and security.md into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    seconds: dict[str, float] = {}
    sections: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[], Any]) -> None:
        t = time.monotonic()
        sections[name] = fn()
        seconds[name] = round(time.monotonic() - t, 1)

    with tempfile.TemporaryDirectory(prefix="cc-security-") as tmp:
        base = Path(tmp)
        timed("path_attacks", lambda: path_attacks(base / "paths"))
        timed("atomicity", lambda: {tool: kill_trials(base / tool, tool, kills) for tool in ("write", "edit_lines")})
        timed("bash", lambda: bash_checks(base / "bash"))
        timed("config", lambda: config_refusals(base / "config"))
        timed("model_cache", lambda: model_cache_checks(base / "cache"))
        timed("terminal", lambda: terminal_injection(base / "terminal"))
        timed("secrets", lambda: secret_checks(base / "secrets"))
        timed("smaller", lambda: smaller_checks(base / "small"))
        timed("sandbox", sandbox_attacks)
        timed("adapter_kills", lambda: adapter_kill_trials(base / "adapter", adapter_kills))
    timed("parser_fuzz", lambda: parser_fuzz(fuzz))
    report = assemble(sections, seconds=round(time.monotonic() - started, 1), seconds_by_section=seconds)
    (out_dir / "security.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "security.md").write_text(to_markdown(report))
    return report
