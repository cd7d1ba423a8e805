"""Probe: does quoting the lines a correction names (`referred.py`) make the retry follow a correction given in words?

Real code: eight bugs planted in six third-party packages' sdists (`cases.json`: the file, the planted text, the
task, a correction in words that names a line or a name but does not give the line, a check).  The real 1.5B
model and the real session with its rails, no learning (`enable_training` off: the two arms differ only in the
denial's text).  The simulated user approves what stays in the workspace until the first change the model proposes
(write, edit_lines, replace, or a bash command that edits), denies it with the case's correction, then approves the
next three proposals.  Recorded per (case, seed): the first retry, whether the check passes after it (`first`), and
after the three (`within3`), and whether the first change after the denial is at the planted line (`aimed`, in
`--compare`).  Arms: `on` (HEAD) and `off` (the same code with `named_lines` returning ""), both without learning;
`train` (HEAD with learning on, as a user has it: the denial's interim update before the retry; each run from the
same base weights and a new learner; the deferred distillation after the task is not run: it cannot change
what is counted).

    python probe.py on|off OUT.jsonl [seeds...]      # the sdists are fetched into ./dl with pip download
    python probe.py --compare on.jsonl off.jsonl
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
AFTER = 3


def changes(call) -> bool:
    from continualcode.rails import CHANGING

    cmd = str(call.arguments.get("command", "")) if call.name == "bash" else ""
    return call.name in CHANGING or bool(re.search(r"\bsed\b[^|]*\s-i|\bperl\b[^|]*\s-i|>|\btee\b", cmd))


def check(case: dict, root: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(root / case.get("pythonpath", ""))}
    return subprocess.run([sys.executable, "-c", case["check"]], cwd=root, env=env, capture_output=True,
                          timeout=60).returncode == 0


def source(case: dict) -> Path:
    dl = HERE / "dl"
    if not (dl / case["dir"]).is_dir():
        dl.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        case["sdist"], "-d", str(dl)], check=True)
        archive = next(dl.glob(case["dir"] + ".tar.gz"))
        shutil.unpack_archive(archive, dl)
    return dl / case["dir"]


class User:
    def __init__(self, case: dict, root: Path, correction: str) -> None:
        self.case, self.root, self.correction = case, root, correction
        self.denied, self.after, self.first = None, [], None

    def decide(self, call, preview):
        from continualcode.agent import Abort, Approve, Deny
        from continualcode.bench.learn.scenario import unsafe

        if self.denied is None:
            if changes(call):
                self.denied = {"name": call.name, "arguments": call.arguments}
                return Deny(self.correction)
            return Deny("") if unsafe(call) else Approve()
        if len(self.after) == 1:
            self.first = check(self.case, self.root)  # the first retry has run
        self.after.append({"name": call.name, "arguments": call.arguments})
        if len(self.after) > AFTER:
            return Abort()
        return Deny("") if unsafe(call) else Approve()


def run(arm: str, out: Path, seeds: list[int]) -> None:
    import continualcode.agent as agent
    from continualcode.build import build_backend, make_learner, make_renderer, read_cap
    from continualcode.config import parse_config
    from continualcode.tools import Workspace

    if arm == "off":
        agent.named_lines = lambda *a, **k: ""
    cfg = parse_config(["model_name=qwen2.5-coder-1.5b", "threads=1",
                        f"enable_training={'true' if arm == 'train' else 'false'}"])
    backend = build_backend(cfg)
    renderer = make_renderer(backend, cfg)
    base = backend.snapshot()
    done = {(r["case"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    for case in json.loads((HERE / "cases.json").read_text()):
        for seed in seeds:
            if (case["id"], seed) in done:
                continue
            with tempfile.TemporaryDirectory(prefix="cc-named-") as tmp:
                root = Path(tmp) / case["dir"]
                shutil.copytree(source(case), root)
                f = root / case["path"]
                f.write_text(f.read_text().replace(case["old"], case["new"]))
                line = next(i + 1 for i, t in enumerate(f.read_text().splitlines()) if case["new"].splitlines()[0] in t)
                user = User(case, root, case["correction"].format(line=line))
                denial: list[str] = []
                updates: list[float] = []
                ws = Workspace(root, **{**cfg.tool_settings(), "pass_secrets": False}, read_cap=read_cap(cfg))

                def sink(ev, denial=denial, updates=updates):
                    if ev.TYPE == "learn":
                        updates.append(round(float(ev.metrics.get("sec_total") or 0.0), 1))
                    if ev.TYPE == "message" and ev.record().get("role") == "user" and "Do this instead" in str(
                            ev.record().get("content")):
                        denial.append(ev.record()["content"])

                backend.restore(base)
                s = agent.Session(backend, renderer, ws, user, sampling=cfg.sampling_config(), seed=seed,
                                  on_event=sink, learner=make_learner(cfg, backend, renderer))
                result = s.run_task(case["task"], settle=False)
                final = check(case, root)
                if user.first is None and user.after:
                    user.first = final
            row = {"case": case["id"], "seed": seed, "arm": arm, "denied": user.denied, "denial": denial[:1],
                   "retries": user.after, "first": user.first, "within3": final if user.denied else None,
                   "status": result.status, "updates_s": updates}
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(case["id"], seed, "first", user.first, "within3", row["within3"],
                  json.dumps(user.after[:1])[:200], flush=True)


def aimed(case: dict, row: dict) -> bool:
    """Whether the first change after the denial is at the planted line: an `edit_lines` whose range holds it,
    or a `replace` whose old text is in it (the line's number in the planted file, as the correction says)."""
    planted = (source(case) / case["path"]).read_text().replace(case["old"], case["new"]).splitlines()
    first_new = case["new"].splitlines()[0]
    line = next(i + 1 for i, t in enumerate(planted) if first_new in t)
    for call in row["retries"]:
        args = call["arguments"]
        if call["name"] == "edit_lines":
            return int(args.get("start_line", 0)) <= line <= int(args.get("end_line", 0))
        if call["name"] == "replace":
            return bool(args.get("old_string")) and args["old_string"] in planted[line - 1]
        if call["name"] == "write":
            return False
    return False


def compare(a: Path, b: Path) -> None:
    from math import comb

    cases = {c["id"]: c for c in json.loads((HERE / "cases.json").read_text())}
    ra = {(r["case"], r["seed"]): r for r in map(json.loads, a.read_text().splitlines())}
    rb = {(r["case"], r["seed"]): r for r in map(json.loads, b.read_text().splitlines())}
    for rows in (ra, rb):
        for k, r in rows.items():
            r["aimed"] = aimed(cases[k[0]], r) if r["denied"] else None
    both = [k for k in ra if k in rb and ra[k]["denied"] and rb[k]["denied"]]
    same = sum(ra[k]["denied"] == rb[k]["denied"] for k in both)
    print(f"{len(both)} runs denied in both; the same denied call in {same} (the runs agree up to the denial)")
    for key in ("first", "within3", "aimed"):
        up = sum(bool(ra[k][key]) and not rb[k][key] for k in both)
        down = sum(bool(rb[k][key]) and not ra[k][key] for k in both)
        n = up + down
        p = min(1.0, 2 * sum(comb(n, i) for i in range(min(up, down) + 1)) / 2 ** n) if n else 1.0
        print(f"{key}: {a.name} {sum(bool(ra[k][key]) for k in both)}/{len(both)} vs {b.name} "
              f"{sum(bool(rb[k][key]) for k in both)}/{len(both)}; up {up}, down {down}, sign test p = {p:.3g}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        run(sys.argv[1], Path(sys.argv[2]), [int(s) for s in sys.argv[3:]] or [1, 2, 3])
