"""Security benchmark (`continualcode bench security`): not a test, a report, one line per attack class.

Each measurement runs in a throwaway directory; `run(out_dir)` writes security.json and security.md
(the committed ones are in bench/results/security/). One module per measurement:

1. paths.py            every path-taking tool against `..`, absolute paths, symlinks out, /proc, `~` …
2. atomicity.py        kill -9 of a child rewriting a file with write / edit_lines: old or new, never partial
3. bash.py             bash process cleanup: timeouts, background children, daemons, endless output, stdin
4. parser_fuzz.py      the tool-call parser fed generated replies: never raises, never a multi-line error
5. config_refusals.py  bad config values refused in one line before anything loads (parse_config and the CLI)
6. model_cache.py      damage to a copy of the converted model is detected; a real rebuild loads
7. terminal.py         escape sequences through every display path: no raw control character reaches the screen
8. env_secrets.py      secrets in the environment never reach a bash command, unconfined or sandboxed
9. small_items.py      FIFO writes, CRLF grep, BOM, NUL / lone surrogates, the bash timeout clamp
10. sandbox.py         the bash sandbox (when bwrap works here) against 40 attack commands, and its limits
11. adapter_kills.py   kill -9 during learning with the real small model; what is resumed is finite and announced

common.py holds what several share; report.py the summary and security.md; runner.py the run.
Only 11 (and the rebuild in 6) imports torch; the rest needs the standard library,
`continualcode.tools`, the config and the ui.
"""

from __future__ import annotations

from continualcode.bench.security.adapter_kills import adapter_kill_trials
from continualcode.bench.security.atomicity import ATOMICITY_KEYS, kill_trials
from continualcode.bench.security.bash import bash_checks
from continualcode.bench.security.common import PACKAGE_PARENT, SECRET
from continualcode.bench.security.config_refusals import ISSUE_CONFIG_VALUES, config_refusals
from continualcode.bench.security.env_secrets import secret_checks
from continualcode.bench.security.model_cache import model_cache_checks
from continualcode.bench.security.parser_fuzz import parser_fuzz
from continualcode.bench.security.paths import PATH_TOOLS, path_attacks
from continualcode.bench.security.report import to_markdown
from continualcode.bench.security.runner import run
from continualcode.bench.security.sandbox import LIMITS, SANDBOX_ATTACKS, sandbox_attacks
from continualcode.bench.security.small_items import smaller_checks
from continualcode.bench.security.terminal import TERMINAL_ATTACKS, terminal_injection

__all__ = [
    "ATOMICITY_KEYS", "ISSUE_CONFIG_VALUES", "LIMITS", "PACKAGE_PARENT", "PATH_TOOLS", "SANDBOX_ATTACKS", "SECRET",
    "TERMINAL_ATTACKS", "adapter_kill_trials", "bash_checks", "config_refusals", "kill_trials", "model_cache_checks",
    "parser_fuzz", "path_attacks", "run", "sandbox_attacks", "secret_checks", "smaller_checks", "terminal_injection",
    "to_markdown",
]
