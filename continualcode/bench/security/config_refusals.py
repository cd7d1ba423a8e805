"""Configuration refusals: every value the attacker's pass of issue 17 found accepted, and one bad
value of each key's type for every key, through `parse_config` and through the real command line in
a fresh process with empty state and cache directories.

Refused early = a one-line refusal naming the key from `parse_config`, and from the command line
exit 2, one stderr line, no state or cache directory created, torch never imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import child_env, random_token

# the values an attacker's pass found accepted (issue 17), each typed as on the command line
ISSUE_CONFIG_VALUES = (
    "temperature=nan", "temperature=inf", "learning_rate=nan", "learning_rate=inf", "kl_beta=nan", "max_kl=nan",
    "max_kl=-1", "ema_rate=5", "bash_timeout=0", "bash_timeout=-5", "max_turns=0", "max_turns=-1",
    "save_every=-1", "threads=-3", "lora_alpha=-1", "device=tpu", "dtype=int4", "auto_approve=rm",
    "result_cap=10",
)
CLI_PROBE = textwrap.dedent(
    """
    import sys
    from continualcode.cli import main
    rc = main(sys.argv[1:])
    print("torch-loaded" if "torch" in sys.modules else "nothing-loaded")
    sys.exit(rc)
    """
)


def config_refusals(root: Path) -> dict[str, Any]:
    """Every bad value through parse_config, and (unless it holds a NUL byte) through the real command
    line in a fresh process with empty state and cache directories."""
    from continualcode.config import CHECKS, Config, UsageError, parse_config

    hints = typing.get_type_hints(Config)
    values = list(ISSUE_CONFIG_VALUES)
    for key in CHECKS:
        values += [v for v in _typed_bad_values(key, hints.get(key, str)) if v not in values]
    rows = []
    for kv in values:
        key = kv.split("=", 1)[0]
        try:
            parse_config([kv])
            parsed = "accepted"
        except UsageError as e:
            parsed = "refused" if "\n" not in str(e) and key in str(e) else f"refused badly: {str(e)[:80]}"
        cli = _cli_refusal(root, kv) if "\x00" not in kv else None
        early = parsed == "refused" and (cli is None or cli["ok"])
        rows.append({"value": kv.replace("\x00", "\\x00"), "from_issue": kv in ISSUE_CONFIG_VALUES, "key": key,
                     "parse_config": parsed, "cli": cli, "refused_early": early})
    covered = {r["key"] for r in rows if r["refused_early"]}
    return {"keys": len(CHECKS), "keys_covered": len(covered & set(CHECKS)), "rows": rows}


def _typed_bad_values(key: str, kind: Any) -> list[str]:
    """A value of the wrong kind for a key of type `kind` (bool, int, float, str or a Literal)."""
    if kind is bool:
        return [f"{key}=maybe"]
    if typing.get_origin(kind) is typing.Literal:
        return [f"{key}=not-a-choice"]
    if kind is int:
        return [f"{key}=1.5", f"{key}=-999999999"]
    if kind is float:
        return [f"{key}=nan", f"{key}=-inf"]
    return [f"{key}=a\x00b"]  # free text: only a NUL byte is bad (no shell can pass it: parse_config only)


def _cli_refusal(root: Path, kv: str) -> dict[str, Any]:
    d = root / random_token()
    state, cache = d / "state", d / "cache"
    d.mkdir(parents=True)
    env = child_env(CONTINUALCODE_HOME=str(state), CONTINUALCODE_CACHE=str(cache))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", CLI_PROBE, kv], cwd=d, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    secs = time.monotonic() - t
    lines = r.stderr.strip().splitlines()
    ok = (r.returncode == 2 and len(lines) == 1 and r.stdout.strip() == "nothing-loaded"
          and not state.exists() and not cache.exists())
    return {"exit": r.returncode, "stderr_lines": len(lines), "loaded": r.stdout.strip(),
            "created_state": state.exists() or cache.exists(), "seconds": round(secs, 2), "ok": ok,
            "message": (lines[0] if lines else "")[:140]}
