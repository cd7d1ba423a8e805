"""Probe: does the 1.5B model, unconstrained, write invalid JSON escapes (\\d, \\x) in a call's string?"""
import re

from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.records import Message

cfg = parse_config(["model_name=qwen2.5-coder-1.5b", "threads=1"])
be = build_backend(cfg)
r = make_renderer(be, cfg)
files = {
 "nums.py": "import re\n\nPATTERN = re.compile(r'[0-9]')\n\ndef numbers(text):\n    return PATTERN.findall(text)\n",
 "pad.py": "def pad(b: bytes) -> bytes:\n    return b.ljust(8, b'\\x01')\n",
 "split.py": "def words(s):\n    return s.split(' ')\n",
}
tasks = {
 "nums.py": "In nums.py, change PATTERN so that it matches runs of digits with \\d+ (a raw string).",
 "pad.py": "In pad.py, pad with zero bytes (b'\\x00') instead of b'\\x01'.",
 "split.py": "In split.py, split on tabs ('\\t') instead of spaces.",
}


def samples(constraint):
    """(file, seed, decoded reply) for each task: greedy, then 0.3 with seeds 1 and 2."""
    for name, body in files.items():
        shown = "\n".join(f"{i+1:6d}\t{line}" for i, line in enumerate(body.splitlines()))
        read = '<tool_call>\n{"name": "read", "arguments": {"path": "' + name + '"}}\n</tool_call>'
        ids = r.prompt_ids([Message("user", tasks[name]), Message("assistant", read), Message("tool", shown)])
        for seed in range(3):
            s = be.sample(ids, max_tokens=120, temperature=0 if seed == 0 else 0.3, top_p=0.95, stop=r.stop_ids,
                          constraint=constraint, seed=seed)
            yield name, seed, r.decode(s.tokens)


for name, seed, text in samples(None):
    bad = re.findall(r'(?<!\\)\\[^"\\/bfnrtu]', text.replace("\\\\", "\x00\x00"))
    print(name, seed, "INVALID-ESCAPES" if bad else "ok", repr(text[:300]), flush=True)

print("--- constrained (the call grammar, as the agent samples), greedy and 0.3")
for name, seed, text in samples(r.constraint(allow_text=True, allow_calls=True)):
    p = r.parse(text)
    print(name, seed, repr(p.call.arguments if p.call else text), flush=True)
