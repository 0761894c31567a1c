"""llm-compressor's GPTQ on SmolLM2-135M with slimformer's calibration tokens, for the side-by-side table of
`bench_llm.py` (issue 14). llm-compressor pins its own transformers, so this runs in its own venv:

    python3 -m venv /work/venv-llmc
    /work/venv-llmc/bin/pip install torch==2.13.0 llmcompressor
    flock /tmp/slimformer-heavy.lock .venv/bin/python benchmarks/bench_llm.py llmc_inputs   # model dir + tokens
    flock /tmp/slimformer-heavy.lock /work/venv-llmc/bin/python benchmarks/peers/llmcompressor_gptq.py DIR
    flock /tmp/slimformer-heavy.lock .venv/bin/python benchmarks/bench_llm.py llmc          # same perplexity code

DIR (from `llmc_inputs`): `model/` (the fp32 SmolLM2 that slimformer reads from the GGUF, saved with
save_pretrained) and `calib_ids.npy` (the very blocks slimformer's GPTQ calibrates on). For each scheme this
writes `<scheme>.safetensors`, the model's weights after llm-compressor's one-shot pass as it holds them in
memory (quantize-dequantized values, which is what its compressed checkpoint decompresses to), and
`<scheme>.json` (seconds, versions, distinct values per group as a check that the weights really are 4-bit).
Schemes: GPTQ W4A16 with group 64 (slimformer's group) asymmetric and symmetric, the LM head left alone as in
slimformer's rows.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def scheme(group: int, symmetric: bool) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    w = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group", group_size=group)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=w)}


def run(root: Path, name: str, group: int, symmetric: bool) -> None:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = np.load(root / "calib_ids.npy")
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(root / "model", torch_dtype=torch.float32)
    recipe = GPTQModifier(config_groups=scheme(group, symmetric), ignore=["lm_head"], dampening_frac=0.01)
    t0 = time.perf_counter()
    oneshot(model=model, processor=AutoTokenizer.from_pretrained(root / "model"), dataset=ds, recipe=recipe,
            max_seq_length=ids.shape[1], num_calibration_samples=len(ids))
    seconds = time.perf_counter() - t0
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if k.endswith(".weight") and "weight_" not in k and v.is_floating_point()}
    state.pop("lm_head.weight", None)  # tied to the embeddings, unchanged
    w = state["model.layers.0.self_attn.q_proj.weight"]
    distinct = max(len(torch.unique(g)) for g in w.reshape(w.shape[0], -1, group)[:64].reshape(-1, group))
    save_file(state, str(root / f"{name}.safetensors"))
    import llmcompressor

    (root / f"{name}.json").write_text(json.dumps({
        "scheme": name, "group": group, "symmetric": symmetric, "seconds": round(seconds, 1),
        "llmcompressor": llmcompressor.__version__, "torch": torch.__version__,
        "calib_blocks": int(ids.shape[0]), "calib_len": int(ids.shape[1]),
        "max_distinct_values_per_group": int(distinct)}, indent=1))
    print(f"{name}: {seconds:.0f} s, at most {distinct} distinct values per group")


def main() -> None:
    root = Path(sys.argv[1])
    torch.set_num_threads(2)
    for name, group, sym in (("llmc-gptq-w4-g64-asym", 64, False), ("llmc-gptq-w4-g64-sym", 64, True)):
        run(root, name, group, sym)


if __name__ == "__main__":
    main()
