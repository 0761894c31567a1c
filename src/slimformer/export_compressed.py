"""`slimformer export --compressed-tensors DIR`: a weight-only quantized language model as a Hugging Face folder
in the compressed-tensors `pack-quantized` format, the checkpoint format of llm-compressor, which
`AutoModelForCausalLM.from_pretrained(DIR)` loads (with the `compressed-tensors` package installed) and vLLM
serves, without slimformer.

Each weight-only layer (RTN, GPTQ or AWQ codes from `quantize_weights`, 3 to 8 bits) is written with its own
codes, scales and zero points: compressed-tensors' asymmetric integers are ours shifted by 2**(bits-1) (its
range is signed), `group` strategy with our group size, or `channel` when the layer has one scale per row.
The packing itself is compressed-tensors' (its compressor re-derives the integers from the exact dequantized
weight, scale and zero point, so the codes come out unchanged). Layers left in float are listed in `ignore`.
The folder is checked by loading it with transformers and comparing logits with the slimformer model.

Its config asks transformers to dequantize at load (`"dequantize": true`): transformers 5.24 with
compressed-tensors 0.20 cannot load an asymmetric pack-quantized checkpoint in compressed mode (the module it
builds expects the zero points unpacked while the format stores them packed), and on a CPU both modes compute
in fp32 anyway. Word-embedding tables quantized by slimformer are written in fp32 (the format has no
embedding scheme that transformers loads), which the report says.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SlimformerError, check, one_line

# what a plain transformers model of the same config holds
PLAIN_OPS = {"quantize_linear", "quantize_embedding", "untie_lm_head", "share_head_codes"}


def _scheme(q: Any) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    strategy = "group" if q.group_size and q.group_size < q.in_features else "channel"
    return QuantizationArgs(num_bits=q.bits, type="int", symmetric=False, strategy=strategy,
                            group_size=q.group_size if strategy == "group" else None)


def _layers(model: nn.Module) -> dict[str, Any]:
    from .quantize.modules import QLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, QLinear) and m.act == "none"}


def _plain(model: nn.Module) -> nn.Module:
    """The float twin as the plain transformers class of its config (shapes checked)."""
    from .models.surgery import recorded_ops
    from .quantize.onnx_codes import dequantized_twin

    other = sorted({op.get("op") for op in recorded_ops(model)} - PLAIN_OPS)
    check(not other, f"export --compressed-tensors: the model has {', '.join(other)}, which a plain Hugging Face "
          f"model of its config cannot hold; export it with --onnx")
    twin = dequantized_twin(model)
    cfg = copy.deepcopy(twin.config)
    if hasattr(cfg, "slimformer"):
        delattr(cfg, "slimformer")
    plain = type(twin)(cfg).eval()
    want = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    check(want == got, "export --compressed-tensors: the model's tensors do not fit a plain model of its config")
    plain.load_state_dict(twin.state_dict())
    return plain


def write_compressed_tensors(model: nn.Module, tokenizer: Any, out: str | Path) -> dict[str, Any]:
    """Write `out` (atomically); returns {"bytes", "layers", "max_abs_diff", "notes"}."""
    from .fsutil import atomic_dir, weights_size

    try:
        from compressed_tensors.compressors import BaseCompressor
        from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
    except ImportError as e:
        raise SlimformerError("export --compressed-tensors needs the compressed-tensors package "
                              "(pip install compressed-tensors)") from e
    check(hasattr(model, "can_generate") and model.can_generate(),
          "export --compressed-tensors applies to language models")
    layers = _layers(model)
    check(bool(layers), "export --compressed-tensors: the model has no weight-only quantized layer "
          "(run quantize_weights first)")
    plain = _plain(model)
    state = plain.state_dict()
    if getattr(plain.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    compressor = BaseCompressor.load_from_registry("pack-quantized")
    groups: dict[tuple, list[str]] = {}
    for name, q in layers.items():
        args = _scheme(q)
        scheme = QuantizationScheme(targets=[name], weights=args)
        shift = 2 ** (q.bits - 1)
        with torch.no_grad():
            local = {"weight": state.pop(f"{name}.weight"), "weight_scale": q.scale.float().clone(),
                     "weight_zero_point": (q.zero.to(torch.int16) - shift).to(torch.int8)}
        for k, v in compressor.compress(local, scheme).items():
            state[f"{name}.{k}"] = v.contiguous()
        groups.setdefault((q.bits, args.strategy, args.group_size), []).append(name)
    config_groups = {f"group_{i}": QuantizationScheme(targets=names, weights=_scheme(layers[names[0]]))
                     for i, names in enumerate(groups.values())}
    ignore = [n for n, m in plain.named_modules() if isinstance(m, nn.Linear) and n not in layers]
    qcfg = QuantizationConfig(config_groups=config_groups, format="pack-quantized", quantization_status="compressed",
                              ignore=ignore)
    with atomic_dir(out, kind="compressed-tensors") as tmp:
        from safetensors.torch import save_file

        plain.config.quantization_config = {**qcfg.model_dump(exclude_none=True), "dequantize": True}
        plain.config.save_pretrained(tmp)
        if getattr(plain, "generation_config", None) is not None:
            plain.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        diff = _check(tmp, model)
    kinds = ", ".join(f"{b}-bit {s}" + (f" {g}" if g else "") for b, s, g in groups)
    left = ", ".join(ignore[:3]) + (" ..." if len(ignore) > 3 else "")
    notes = [f"{len(layers)} layers with their own codes ({kinds}); {len(ignore)} Linear(s) left in float"
             + (f": {left}" if ignore else "")]
    from .quantize.modules import QEmbedding

    if any(isinstance(m, QEmbedding) for m in model.modules()):
        notes.append("the quantized word embeddings are written in fp32 (dequantized)")
    return {"bytes": weights_size(Path(out)), "layers": len(layers), "max_abs_diff": diff, "notes": notes}


def _check(folder: Path, model: nn.Module) -> float:
    """Load the folder with transformers and compare logits with the model on a seeded probe."""
    from transformers import AutoModelForCausalLM

    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    except Exception as e:  # any loader failure is one line for the user
        raise SlimformerError(f"export --compressed-tensors: transformers could not load the folder: {one_line(e)}") from e
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    diff = float((ref - got).abs().max())
    check(diff <= 1e-3 * max(1.0, float(ref.abs().max())),
          f"export --compressed-tensors: transformers' model differs from slimformer's by {diff:.2e}; not written")
    return diff
