"""The result of a security run: `assemble` puts the sections' results together under a summary of
counts (security.json), `to_markdown` writes them as security.md (the unsafe counts per attack
class first, then one section per measurement).

Pure: dicts in, dicts and text out; it runs nothing. The summary's keys and the markdown's layout
are what bench/results/security/ holds, so a change here shows as a diff there.
"""

from __future__ import annotations

from typing import Any

from continualcode.bench.security.atomicity import ATOMICITY_KEYS
from continualcode.bench.security.terminal import TERMINAL_ATTACKS


def assemble(sections: dict[str, Any], *, seconds: float, seconds_by_section: dict[str, float]) -> dict[str, Any]:
    """{"summary": counts, then each section's own result}: what security.json holds."""
    paths, atomicity, bash = sections["path_attacks"], sections["atomicity"], sections["bash"]
    fuzzed, config, cache = sections["parser_fuzz"], sections["config"], sections["model_cache"]
    terminal, secrets_, small = sections["terminal"], sections["secrets"], sections["smaller"]
    sandbox, adapter = sections["sandbox"], sections["adapter_kills"]
    summary: dict[str, Any] = {
        "path_attacks": len(paths),
        "path_attacks_unsafe": sum(not r["safe"] for r in paths),
        "kills": sum(a["kills"] for a in atomicity.values()),
        "partial_files": sum(a["partial"] + a["missing"] for a in atomicity.values()),
        "bash_checks": len(bash),
        "bash_checks_failed": sum(not c["passed"] for c in bash),
        "parser_inputs": fuzzed["inputs"],
        "parser_crashes": fuzzed["crash"],
        "config_values": len(config["rows"]),
        "config_accepted_or_late": sum(not r["refused_early"] for r in config["rows"]),
        "config_keys_covered": config["keys_covered"],
        "config_keys": config["keys"],
        "cache_damages": len(cache.get("damages", [])),
        "cache_damages_missed": sum(not d["detected"] for d in cache.get("damages", [])),
        "cache_rebuilt_and_loads": cache.get("rebuild", {}).get("rebuilt_and_loads"),
        "terminal_renders": terminal["renders"],
        "terminal_unsafe": terminal["unsafe"],
        "secret_checks": len(secrets_),
        "secret_leaks": sum(r["leaked"] for r in secrets_),
        "smaller_checks": len(small),
        "smaller_failed": sum(not c["passed"] for c in small),
        "sandbox": sandbox.get("available", False),
        "sandbox_attacks": len(sandbox.get("rows", [])),
        "sandbox_writes_outside": sandbox.get("writes_outside"),
        "sandbox_network": sandbox.get("network_reached"),
        "sandbox_secrets_read": sandbox.get("secrets_read"),
        "sandbox_escapes": sandbox.get("escapes"),
        "adapter_kills": adapter.get("kills", 0),
        "adapter_nonfinite_resumed": adapter.get("nonfinite_resumed"),
        "adapter_corrupt_resumed": adapter.get("corrupt_resumed"),
        "seconds": seconds,
        "seconds_by_section": seconds_by_section,
    }
    order = ("parser_fuzz", "path_attacks", "atomicity", "bash", "config", "model_cache", "terminal", "secrets",
             "smaller", "sandbox", "adapter_kills")
    return {"summary": summary, **{k: sections[k] for k in order}}


def to_markdown(report: dict[str, Any]) -> str:
    """security.md: the unsafe counts per class first, then one section per measurement."""
    s = report["summary"]
    sb = report["sandbox"]
    ak = report["adapter_kills"]
    mc = report["model_cache"]
    lines = [
        "# continualcode: security benchmark",
        "",
        "Unsafe outcomes per attack class (each must be 0):",
        "",
        "| class | tried | unsafe |",
        "|---|---|---|",
        _row(["path attacks on the file tools", str(s["path_attacks"]), str(s["path_attacks_unsafe"])]),
        _row(["kill -9 during write / edit_lines (partial or missing file)", str(s["kills"]), str(s["partial_files"])]),
        _row(["bash process cleanup checks failed", str(s["bash_checks"]), str(s["bash_checks_failed"])]),
        _row(["tool-call parser fuzz (crashes)", str(s["parser_inputs"]), str(s["parser_crashes"])]),
        _row([f"bad config values accepted, or refused only after loading ({s['config_keys_covered']} of "
              f"{s['config_keys']} keys covered)", str(s["config_values"]), str(s["config_accepted_or_late"])]),
        _row(["model cache damage not detected", str(s["cache_damages"]), str(s["cache_damages_missed"])]),
        _row(["terminal injection: renders with a raw control character", str(s["terminal_renders"]),
              str(s["terminal_unsafe"])]),
        _row(["secrets reaching a bash command", str(s["secret_checks"]), str(s["secret_leaks"])]),
        _row(["smaller tool findings (FIFO, CRLF, BOM, NUL/surrogates, timeout clamp) failing",
              str(s["smaller_checks"]), str(s["smaller_failed"])]),
    ]
    if sb.get("available"):
        lines += [
            _row(["sandbox: writes outside the workspace", str(_n(sb, "write")), str(sb["writes_outside"])]),
            _row(["sandbox: network reached", str(_n(sb, "network")), str(sb["network_reached"])]),
            _row(["sandbox: secrets read", str(_n(sb, "secret")), str(sb["secrets_read"])]),
            _row(["sandbox: escapes (signal the agent, see the host, undo the confinement, daemons)",
                  str(_n(sb, "escape")), str(sb["escapes"])]),
        ]
    if ak.get("kills"):
        lines.append(_row(["kill -9 during learning: non-finite / corrupt adapters resumed", str(ak["kills"]),
                           f"{ak['nonfinite_resumed']} / {ak['corrupt_resumed']}"]))
    lines += ["", f"Took {s['seconds']} s ({', '.join(f'{k} {v} s' for k, v in s['seconds_by_section'].items())})."]
    if not sb.get("available"):
        lines += ["", f"The sandbox section did not run: {sb.get('skipped')}."]

    lines += ["", "## Path attacks", "",
              "| tool | attack | must refuse | refused | leaked | modified outside | safe | message |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["path_attacks"]:
        flags = [_yn(r[k]) for k in ("must_refuse", "refused", "leaked", "modified_outside", "safe")]
        msg = r["message"].replace("|", "\\|").replace("`", "'")
        lines.append(_row([r["tool"], r["attack"], *flags, f"`{msg}`"]))
    keys = ["kills", *ATOMICITY_KEYS, "orphans_after_next_write", "seconds_per_call"]
    lines += ["", "## kill -9 atomicity of the file tools", "", _row(["tool", *keys]), _row(["---"] * (len(keys) + 1))]
    lines += [_row([tool, *(str(a[k]) for k in keys)]) for tool, a in report["atomicity"].items()]
    lines += ["", "## bash process cleanup (unconfined)", "",
              _row(["check", "expected", "observed", "passed", "seconds"]), _row(["---"] * 5)]
    for c in report["bash"]:
        lines.append(_row([c["check"], c["expected"], c["observed"], _yn(c["passed"]), str(c["seconds"])]))
    f = report["parser_fuzz"]
    lines += ["", "## Tool-call parser fuzz", "", f"{f['inputs']} generated replies, {f['crash']} crashes "
              f"(outcomes: {_outcomes(f)})."]

    cfg = report["config"]
    lines += ["", "## Configuration", "",
              f"{len(cfg['rows'])} bad values ({sum(r['from_issue'] for r in cfg['rows'])} from issue 17, then one "
              f"of the wrong kind for each of the {cfg['keys']} keys); the command line runs in a fresh process with "
              "empty state and cache directories. Refused early = one-line refusal from `parse_config`, and from the "
              "command line exit 2, one stderr line, nothing created, torch never imported.", "",
              _row(["value", "parse_config", "command line", "refused early"]), _row(["---"] * 4)]
    for r in cfg["rows"]:
        cli = r["cli"]
        shown = "– (a NUL byte: no shell passes one)" if cli is None else (
            f"exit {cli['exit']}, {cli['stderr_lines']} line, {cli['loaded']}, {cli['seconds']} s")
        lines.append(_row([f"`{r['value']}`", r["parse_config"], shown, _yn(r["refused_early"])]))

    lines += ["", "## Model cache", ""]
    if "skipped" in mc:
        lines.append(f"Not measured: {mc['skipped']}.")
    else:
        lines += [_row(["damage to a copy of the converted smollm2-135m", "detected", "verify says", "seconds"]),
                  _row(["---"] * 4)]
        lines += [_row([d["damage"], _yn(d["detected"]), str(d["problem"]), str(d["verify_seconds"])])
                  for d in mc["damages"]]
        rb = mc["rebuild"]
        lines += ["", f"Real rebuild after same-size damage: \"{rb['said']}\"; {rb['seconds']} s; verified after: "
                  f"{_yn(rb['verified_after'])}; loads with finite weights: {_yn(rb['rebuilt_and_loads'])}; "
                  f"leftovers of a killed conversion removed: {rb['leftovers_removed']} of {rb['leftovers']}."]

    t = report["terminal"]
    lines += ["", "## Terminal injection", "",
              f"{t['attacks']} attack strings × {t['paths']} display paths = {t['renders']} renders through a real "
              f"rich console (no colour, so rich itself emits no escape): {t['unsafe']} with a raw control character.",
              "", _row(["attack", "unsafe renders"]), _row(["---"] * 2)]
    for attack in TERMINAL_ATTACKS:
        lines.append(_row([attack, str(sum(r["unsafe"] for r in t["rows"] if r["attack"] == attack))]))

    lines += ["", "## Secrets", "", _row(["check", "leaked"]), _row(["---"] * 2)]
    lines += [_row([r["check"], _yn(r["leaked"])]) for r in report["secrets"]]
    lines += ["", "## Smaller tool findings", "", _row(["check", "passed", "observed"]), _row(["---"] * 3)]
    lines += [_row([c["check"], _yn(c["passed"]), f"`{c['observed'].replace('|', '/')}`"]) for c in report["smaller"]]

    lines += ["", "## Sandbox (bubblewrap)", ""]
    if not sb.get("available"):
        lines.append(f"Not run: {sb.get('skipped')}.")
    else:
        lines += [f"{sb['attacks']} attack commands, each run sandboxed (no network allowed) and judged from the "
                  "host: writes = anything outside the workspace changed (a visible directory beside it, the home "
                  "directory, /etc, /usr, /var/tmp, /dev/shm, the host's temp dir); network = an answer from the "
                  "host's loopback, an abstract socket or the internet; secrets = a secret's value in the output; "
                  f"escapes. Control: unconfined, the loopback server answers: "
                  f"{_yn(sb['control_unconfined_reaches_loopback'])}.", "",
                  _row(["class", "attack", "unsafe", "seconds", "evidence (tail)"]), _row(["---"] * 5)]
        for r in sb["rows"]:
            ev = r["evidence"].replace("\n", " ⏎ ").replace("|", "/").replace("`", "'")
            lines.append(_row([r["category"], r["attack"], _yn(r["unsafe"]), str(r["seconds"]), f"`{ev[-90:]}`"]))
        lines += ["", "Limits it does not close (documented in docs/security.md):", ""]
        lines += [f"- {lim['limit']}: {'open' if lim['open'] else 'closed here'}" for lim in sb["limits"]]

    lines += ["", "## kill -9 during learning (smollm2-135m, one thread)", ""]
    if not ak.get("kills"):
        lines.append(f"Not run: {ak.get('skipped')}.")
    else:
        keys = ["kills", "in_save_window", "resumed_adapter", "resumed_previous", "unloadable", "nonfinite_resumed",
                "corrupt_resumed", "child_errors", "saves_completed", "steps_completed", "poisoned_steps",
                "poisoned_steps_rolled_back", "states_announced", "seconds_per_save_and_step"]
        lines += [_row(keys), _row(["---"] * len(keys)), _row([str(ak[k]) for k in keys])]
    return "\n".join(lines) + "\n"


def _n(sb: dict[str, Any], category: str) -> int:
    return sum(r["category"] == category for r in sb["rows"])


def _outcomes(f: dict[str, Any]) -> str:
    return ", ".join(f"{k} {f[k]}" for k in ("call", "text", "error", "multiline_error"))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"
