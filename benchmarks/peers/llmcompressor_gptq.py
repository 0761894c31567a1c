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
`<scheme>.json` (seconds, versions, and a check: distinct values per group for GPTQ, the share of zeros for
pruning). Schemes: GPTQ W4A16 with group 64 asymmetric and symmetric and group 32 asymmetric (its defaults:
static act-order, min-max grids, dampening 0.01 as slimformer's), SparseGPT and Wanda
at 50% unstructured, the LM head left alone as in slimformer's rows. Not compared: its W8A8 schemes, whose
activation quantization is simulated at run time and would be lost in these weights.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def scheme(group: int, symmetric: bool) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    w = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group", group_size=group)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=w)}


def modifier(kind: str) -> tuple[Any, dict]:
    """llm-compressor's modifier for a scheme, and what to record about it."""
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.quantization import GPTQModifier

    if kind.startswith("gptq"):  # gptq-w4-g<group>-<asym|sym>; its defaults: static act-order, min-max grids
        sym, group = kind.endswith("-sym"), int(kind.split("-g")[1].split("-")[0])
        return (GPTQModifier(config_groups=scheme(group, sym), ignore=["lm_head"], dampening_frac=0.01),
                {"group": group, "symmetric": sym})
    cls = SparseGPTModifier if kind == "sparsegpt" else WandaPruningModifier
    return cls(sparsity=0.5, mask_structure="0:0", targets=["Linear"], ignore=["re:.*lm_head"]), {"sparsity": 0.5}


def run(root: Path, kind: str) -> None:
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = f"llmc-{kind}"
    ids = np.load(root / "calib_ids.npy")
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(root / "model", torch_dtype=torch.float32)
    recipe, info = modifier(kind)
    t0 = time.perf_counter()
    oneshot(model=model, processor=AutoTokenizer.from_pretrained(root / "model"), dataset=ds, recipe=recipe,
            max_seq_length=ids.shape[1], num_calibration_samples=len(ids))
    seconds = time.perf_counter() - t0
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if k.endswith(".weight") and "weight_" not in k and v.is_floating_point()}
    state.pop("lm_head.weight", None)  # tied to the embeddings, unchanged
    layers = [v for k, v in state.items() if ".layers." in k and "proj" in k]
    if "group" in info:  # a check that the weights really are 4-bit: distinct values per group of 64
        w = state["model.layers.0.self_attn.q_proj.weight"]
        groups = w.reshape(-1, info["group"])[:4096]
        info["check"] = f"{max(len(torch.unique(g)) for g in groups)} distinct values per group"
    else:
        info["check"] = f"{sum(int((v == 0).sum()) for v in layers) / sum(v.numel() for v in layers):.1%} zeros"
    save_file(state, str(root / f"{name}.safetensors"))
    import llmcompressor

    (root / f"{name}.json").write_text(json.dumps({
        "scheme": name, "seconds": round(seconds, 1), "llmcompressor": llmcompressor.__version__,
        "torch": torch.__version__, "calib_blocks": int(ids.shape[0]), "calib_len": int(ids.shape[1]), **info},
        indent=1))
    print(f"{name}: {seconds:.0f} s, {info['check']}")


def main() -> None:
    root = Path(sys.argv[1])
    torch.set_num_threads(2)
    for kind in sys.argv[2:] or ("gptq-w4-g64-asym", "gptq-w4-g64-sym", "gptq-w4-g32-asym", "sparsegpt", "wanda"):
        run(root, kind)


if __name__ == "__main__":
    main()
