"""Random-weight model directories of real shapes, for the CUDA check: `mkmodel.py SRC OUT KIND` copies
SRC's tokenizer and config (KIND qwen15 or qwen3-4b reshapes it) and saves random bf16 weights to OUT."""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers

src, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cfg = json.loads((src / "config.json").read_text())
cfg.pop("layer_types", None)
if kind == "qwen15":  # Qwen2.5-Coder-1.5B shape
    cfg.update(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
               num_key_value_heads=2, tie_word_embeddings=True)
elif kind == "qwen3-4b":  # Qwen3-4B shape (Qwen2.5 tokenizer: same vocabulary size)
    cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=2560, intermediate_size=9728,
               num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
               tie_word_embeddings=True)
out.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name != "config.json":
        shutil.copy(f, out / f.name)
(out / "config.json").write_text(json.dumps(cfg))
torch.manual_seed(0)
conf = transformers.AutoConfig.from_pretrained(out)
with torch.device("cuda"):
    m = transformers.AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16)
m.save_pretrained(out)
print(kind, sum(p.numel() for p in m.parameters()) / 1e9, "B params ->", out)
