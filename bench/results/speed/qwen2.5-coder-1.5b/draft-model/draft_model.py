"""Would the 0.5B model pay as a draft model for the 1.5B (the same tokenizer)?  Run from the repository root:
`python bench/results/speed/qwen2.5-coder-1.5b/draft-model/draft_model.py` (output.txt beside it).

On the speed bench's draft prompts: the 1.5B's greedy call under its tool's grammar (int8 copies, the default
path); the 0.5B teacher-forced over that call: alpha = how often its argmax (raw logits, every position, the
forced JSON syntax included: optimistic) is the 1.5B's token.  Then the standard expected speedup for k drafted
tokens, E = (1 - a^(k+1)) / (1 - a) tokens a verify at k * c_draft + c_verify(k) seconds, against one-row steps;
the costs are what the backends' own draft budgets measured (RowCosts) while decoding the same prompts."""

import torch

from continualcode.bench.speed import decode
from continualcode.bench.speed.__init__ import _draft_file
from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config

cfg, cfg_s = parse_config(["model_name=qwen2.5-coder-1.5b"]), parse_config(["model_name=qwen2.5-coder-0.5b"])
big, small = build_backend(cfg), build_backend(cfg_s)
rb, rs = make_renderer(big, cfg), make_renderer(small, cfg_s)
prompts = decode.draft_prompts(*_draft_file(cfg), [t["function"]["name"] for t in rb.tools])
lookup, big.drafter, small.drafter = big.drafter, None, None
tot: dict[str, list[int]] = {}
for kind, msgs in prompts:
    prompt = rb.prompt_ids(msgs)
    big.clear_cache()
    big._prefix(prompt[:-1], "live")
    toks = list(big.sample(prompt, max_tokens=320, temperature=0.0, seed=0,
                           constraint=rb.constraint(allow_text=False, only=(kind,))).tokens)
    with torch.no_grad():
        logits = small.model(input_ids=torch.tensor([prompt + toks[:-1]]), logits_to_keep=len(toks)).logits[0]
    hit = [int(p == t) for p, t in zip(logits.float().argmax(-1).tolist(), toks, strict=True)]
    a = tot.setdefault(kind, [0, 0])
    a[0], a[1] = a[0] + sum(hit), a[1] + len(hit)
    print(kind, len(toks), "argmax agreement", round(sum(hit) / len(hit), 3), flush=True)
alpha = sum(v[0] for v in tot.values()) / sum(v[1] for v in tot.values())
print("alpha all positions", round(alpha, 3), {k: round(v[0] / v[1], 3) for k, v in tot.items()})
big.drafter = lookup  # the costs: each backend's draft budget times its forwards while decoding
for kind, msgs in prompts:
    prompt = rb.prompt_ids(msgs)
    big.clear_cache()
    big._prefix(prompt[:-1], "live")
    big.sample(prompt, max_tokens=320, temperature=0.0, seed=0,
               constraint=rb.constraint(allow_text=False, only=(kind,)))
for kind, msgs in prompts[:3]:
    prompt = rs.prompt_ids(msgs)
    small.clear_cache()
    small._prefix(prompt[:-1], "live")
    small.sample(prompt, max_tokens=64, temperature=0.0, seed=0,
                 constraint=rs.constraint(allow_text=False, only=(kind,)))
cb = next(c for key, c in big._row_costs.items() if key[1]).mean
cs = next(c for key, c in small._row_costs.items() if key[1]).mean
print("1.5B forward costs ms by guessed rows", {k: round(v * 1e3, 1) for k, v in sorted(cb.items())})
print("0.5B one-row step ms", round(cs[0] * 1e3, 1))


def verify(k: int) -> float:
    if k in cb:
        return cb[k]
    lo = max(g for g in cb if g < k)
    hi = min((g for g in cb if g > k), default=None)
    if hi is None:
        return cb[lo] + (cb[lo] - cb[0]) / max(lo, 1) * (k - lo)
    return cb[lo] + (cb[hi] - cb[lo]) * (k - lo) / (hi - lo)


for k in range(1, 9):
    e = (1 - alpha ** (k + 1)) / (1 - alpha)
    cost = k * cs[0] + verify(k)
    print(f"alpha {alpha:.3f} k={k}: {e:.2f} tokens per verify, {cost * 1e3:.0f} ms -> speedup {e * cb[0] / cost:.2f}x")
