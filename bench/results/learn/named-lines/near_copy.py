"""Replay of a user trial's correction that gives a line's new content (toml 0.10.2; see README, "Near-copies").

The planted bug and the task are the trial's; the simulated user of `probe.py` denies the model's first change
with the trial's correction and approves the next three proposals; no weight update.  Arms: `new` (the code
on PYTHONPATH) and `old` (the same code with `referred.py` as it was before near-copies, d236d95~1: the
definition of `unicode`, a name inside the copied line, is quoted instead of the line).

    PYTHONPATH=<checkout> python near_copy.py new|old OUT.jsonl [seeds...]    # ~5 min a seed, threads=1
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import probe

CASES = [
    {"id": "toml-bool", "sdist": "toml==0.10.2", "dir": "toml-0.10.2", "path": "toml/encoder.py",
     "old": "bool: lambda v: unicode(v).lower(),", "new": "bool: lambda v: unicode(v),",
     "task": "toml.dumps({'flag': True}) writes 'flag = True', but TOML booleans are lowercase: it should write "
             "'flag = true'. Find the bug in toml/encoder.py and fix it.",
     "correction": "that still writes True; the line should lowercase the text: bool: lambda v: unicode(v).lower(),",
     "check": "import toml; assert toml.dumps({'flag': True}).strip() == 'flag = true'"},
]
BEFORE = "d236d95~1"


def main(arm: str, out: Path, seeds: list[int]) -> None:
    here = Path(__file__).resolve().parent
    (here / "dl").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cc-near-copy-"))
    (work / "cases.json").write_text(json.dumps(CASES))
    (work / "dl").symlink_to(here / "dl")
    probe.HERE = work
    if arm == "old":
        import continualcode.agent as agent

        old = work / "referred_old.py"
        old.write_text(subprocess.run(["git", "show", f"{BEFORE}:continualcode/referred.py"], cwd=here,
                                      capture_output=True, text=True, check=True).stdout)
        spec = importlib.util.spec_from_file_location("referred_old", old)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        agent.named_lines = module.named_lines
    probe.run("on", out.resolve(), seeds)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), [int(s) for s in sys.argv[3:]] or [1, 2, 3, 4, 5, 6])
