"""`slimformer export`: any model slimformer wrote, as one ONNX file checked in ONNX Runtime.

Four kinds of model, one file each (an encoder-decoder: three graphs):

- quantized with `backend: onnxruntime`: the model already holds its INT8 ONNX graph; it is written as is,
  after checking that ONNX Runtime loads it and gives the model's logits;
- with torch INT8 kernels (fbgemm `QLinear`, dynamic or static): those kernels have no ONNX form, so the
  layers are exported with their INT8 weights dequantized and quantized again by ONNX Runtime (dynamic,
  per channel), checked against the model's FP32 weights (within 10%, or twice the torch INT8 model's own error);
- a decoder-only LM with weight-only 4-bit layers (or any with `int4`): the KV-cache decoder graph with those
  layers' own codes as ONNX Runtime MatMulNBits (and, with `int4`, the float MatMuls left rounded to 4 bits),
  checked by next-token agreement;
- everything else (FP32, pruned, factorized, shared, weight-only 8/4-bit): the torch exporter, checked
  within `atol` (`optimize`: the fusable export, then ORT's transformer fusions when they match).

The tokenizer goes to `<stem>-tokenizer/` next to the file. Everything is built in a temporary directory
beside the destination and moved there only when every check passed: a failure leaves no stub and no
temporary file, and exporter messages become one complete line.
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .errors import SlimformerError, check, one_line
from .fsutil import sha256
from .outputs import check_output, read_marker, write_errors

QUANT_TOLERANCE = 0.1  # |ORT INT8 - FP32| / |FP32| logits on the probe batch (or twice torch INT8's own error)


def tokenizer_dir(onnx: str | os.PathLike) -> Path:
    p = Path(onnx)
    return p.parent / f"{p.stem}-tokenizer"


def check_export_paths(onnx: str | os.PathLike, inputs: list[Any], overwrite: bool) -> None:
    """Refuse destinations that could lose a file (before the model is loaded). An existing file written
    by an earlier `slimformer export` (its tokenizer folder records its hash) may be replaced."""
    ours = _earlier_export(Path(onnx))
    check_output(onnx, inputs, overwrite, kind="file", flag="--onnx", replaceable=ours)
    check_output(tokenizer_dir(onnx), inputs, overwrite or ours, kind="dir", flag="tokenizer folder")


def _earlier_export(onnx: Path) -> bool:
    marker = read_marker(tokenizer_dir(onnx))
    return bool(marker and onnx.is_file() and not onnx.is_symlink() and marker.get("onnx") == onnx.name
                and marker.get("sha256") == sha256(onnx))


def export_onnx(model: Any, tokenizer: Any, onnx: str | os.PathLike, atol: float = 1e-4,
                optimize: bool = False, embedding: bool = False, int4: int | None = None,
                int4_accuracy: int = 4) -> dict[str, Any]:
    """Write `onnx` (+ its tokenizer folder) for any slimformer model; returns what was done:
    {"kind", "max_abs_diff", "notes", "bytes"}. `embedding` (a sentence encoder): the graph ends with mean
    pooling and L2 normalisation (output `sentence_embedding`), checked against the model's embeddings.
    `int4` (a block size): a decoder-only LM's MatMul weights become 4-bit MatMulNBits (checked against
    PyTorch by top-1 agreement, not atol); `int4_accuracy` is MatMulNBits' accuracy level: 4 multiplies in INT8
    (activations quantized per block on the fly, fastest), 0 in fp32 on dequantized weights.
    Raises SlimformerError with one line on any failure."""
    from .fsutil import _umask, atomic_dir

    from .quantize.half import float32_twin
    from .quantize.ops import dequantizing

    onnx = Path(onnx)
    model, cast_note = float32_twin(dequantizing(model))
    codes = _decoder_4bit_layers(model)
    check(int4_accuracy in (0, 1, 4),
          f"int4 accuracy level must be 0, 1 (float) or 4 (INT8), got {int4_accuracy}")
    if int4:
        from .export_generative import geometry

        check(hasattr(model, "can_generate") and model.can_generate() and not _fbgemm_layers(model),
              "--int4 applies to decoder-only language models in float (export the model before quantize_dynamic)")
        geometry(model)  # one line when it is not decoder-only
    with write_errors(onnx):
        onnx.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{onnx.name}.tmp-", dir=onnx.parent) as d:
            tmp = Path(d) / "model.onnx"
            if embedding:
                from .export_embeddings import check_encoder

                check_encoder(model, "export --embedding")
            try:
                with warnings.catch_warnings():  # exporter warnings are noise to a user; results are checked
                    warnings.simplefilter("ignore")
                    info = (_write_int4_decoder(model, tmp, int4, codes, int4_accuracy) if int4 or codes else
                            _write_graph(model, tokenizer, tmp, atol, optimize, onnx))
                    if embedding:
                        from .export_embeddings import pool_and_check

                        info.update(pool_and_check(tmp, model, tokenizer))
                        info["kind"] += " + mean pooling + L2 normalisation (output sentence_embedding)"
            except SlimformerError:
                raise
            except Exception as e:  # the exporters raise many types, with messages of many lines
                raise SlimformerError(f"ONNX export failed: {one_line(e)}") from e
            extra = [(Path(d) / Path(f).name.replace(onnx.stem, "model", 1), Path(f)) for f in info.pop("extra", [])]
            for _, dst in extra:
                check(not dst.exists() or _earlier_export(onnx), f"{dst} exists (an encoder-decoder export writes "
                      f"it beside {onnx.name}); move it or choose another name")
            with atomic_dir(tokenizer_dir(onnx), kind="onnx-tokenizer", onnx=onnx.name, sha256=sha256(tmp)) as td:
                tokenizer.save_pretrained(td)
            for f, dst in [(tmp, onnx), *extra]:
                os.chmod(f, 0o666 & ~_umask())
                os.replace(f, dst)
    info["bytes"] = sum(f.stat().st_size for f in [onnx, *(dst for _, dst in extra)])
    if cast_note:
        info["notes"] = [*info.get("notes", []), cast_note]
    return info


def _decoder_4bit_layers(model: Any) -> list[Any]:
    """A decoder-only LM's weight-only 4-bit layers that MatMulNBits takes with their own codes."""
    from .quantize.onnx_codes import carried_layers

    decoder_only = (hasattr(model, "can_generate") and model.can_generate()
                    and not getattr(model.config, "is_encoder_decoder", False))
    return carried_layers(model) if decoder_only else []


def _write_int4_decoder(model: Any, path: Path, block: int | None, codes: list[Any], accuracy: int = 4
                        ) -> dict[str, Any]:
    """The KV-cache decoder graph with 4-bit MatMulNBits weights, compared with PyTorch on seeded prompts:
    the model's own 4-bit codes where it has them (`codes`), ONNX Runtime's rounding of the float MatMuls left
    when `block` is given."""
    import numpy as np
    import torch

    from .export_generative import OrtDecoder, export_decoder
    from .quantize.onnx_codes import carry_codes, dequantized_twin, table_codes
    from .quantize.onnx_int4 import quantize_gathers_4bit, quantize_matmuls_4bit

    geo = export_decoder(dequantized_twin(model), path)
    notes = []
    if codes:
        c = carry_codes(path, codes, accuracy_level=accuracy)
        notes.append(f"{c['carried_matmuls']} MatMuls run the model's own 4-bit codes (group "
                     f"{codes[0].group_size or codes[0].in_features}, asymmetric) as MatMulNBits with "
                     f"{'INT8' if accuracy == 4 else 'float'} compute (accuracy level {accuracy})")
    if block:
        q = quantize_matmuls_4bit(path, path, block_size=block, accuracy_level=accuracy)
        notes.append(f"{q['matmulnbits_nodes'] - (c['carried_matmuls'] if codes else 0)} float MatMuls rounded to "
                     f"4 bits by ONNX Runtime (block {block}, symmetric)")
    else:
        q = {"matmulnbits_nodes": c["carried_matmuls"]}
    own = table_codes(model)
    g = quantize_gathers_4bit(path, block_size=block, own=own) if block or own else {"gather_tables": 0}
    if g["gather_tables"]:
        by_ort = g["gather_tables"] - g["own_code_tables"]
        how = ([f"{g['own_code_tables']} with the model's own codes"] if g["own_code_tables"] else []) + (
            [f"{by_ort} rounded in blocks of {block}, asymmetric"] if by_ort else [])
        if g.get("tables_sharing_head_codes"):
            how.append("reading the LM head's 4-bit codes: one copy for both")
        notes.append(f"{g['gather_tables']} embedding table(s) as 4-bit GatherBlockQuantized ({'; '.join(how)})")
    vocab = model.config.vocab_size
    prompts = torch.randint(min(1000, vocab - 1), vocab, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(input_ids=prompts).logits.numpy()
    got = OrtDecoder(path).prefill_logits(prompts.numpy())
    top1 = float((ref.argmax(-1) == got.argmax(-1)).mean())
    rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12))
    check(rel < 0.5, f"the 4-bit graph's logits are far from PyTorch's (relative error {rel:.2f}); not written")
    note = (f"KV-cache decoder graph ({geo['layers']} layers) with {q['matmulnbits_nodes']} MatMuls as 4-bit "
            f"MatMulNBits ({'; '.join(notes)}); on 2 seeded prompts the next-token choice agrees with the PyTorch "
            f"model at {top1:.0%} of positions (relative logit error {rel:.3f}); greedy text may differ from its")
    return {"kind": "decoder with KV cache, 4-bit weights", "notes": [note], "max_abs_diff": float(np.abs(got - ref).max()),
            "top1_agreement": top1, "relative_error": rel, "int4": q}


def _write_graph(model: Any, tokenizer: Any, path: Path, atol: float, optimize: bool, final_name: Path
                 ) -> dict[str, Any]:
    from .export import parity, to_onnx
    from .quantize.onnx_backend import is_onnx

    notes: list[str] = []
    if is_onnx(model):
        path.write_bytes(model.ort.onnx_bytes.numpy().tobytes())
        diff = parity(path, model, tokenizer)
        if diff > atol:
            raise SlimformerError(f"the stored ONNX graph differs from the model by {diff:.2e} (> {atol:g})")
        if optimize:
            fusion = (model.config.slimformer.get("onnxruntime") or {}).get("fusion")
            notes.append(f"already an ONNX Runtime INT8 graph: --optimize changes nothing (fused before "
                         f"quantization: {_fusion_text(fusion)})")
        return {"kind": "onnxruntime INT8 graph (as stored)", "max_abs_diff": diff, "notes": notes}
    generative = hasattr(model, "can_generate") and model.can_generate()
    if generative and _fbgemm_layers(model):
        raise SlimformerError("a generative model quantized with torch INT8 kernels has no ONNX form; export the "
                              "model before quantize_dynamic (and quantize the ONNX graphs with ONNX Runtime)")
    if generative and getattr(model.config, "is_encoder_decoder", False):
        from .export_generative import check_translation, export_seq2seq, seq2seq_paths

        geo = export_seq2seq(model, path)
        checked = check_translation(model, path, min(len(tokenizer), model.config.vocab_size))
        finals = seq2seq_paths(final_name)
        notes.append(f"encoder + first decoder step + decoder step with the KV cache ({geo['layers']} decoder "
                     f"layers): {', '.join(f.name for f in finals)}; slimformer.export_generative.OrtSeq2Seq runs "
                     f"the greedy loop, checked against PyTorch's tokens")
        return {"kind": "encoder-decoder with KV cache", "notes": notes, "max_abs_diff": 0.0,
                "extra": [str(f) for f in finals[1:]], **checked}
    if generative:
        from .export_generative import check_generation, export_decoder

        geo = export_decoder(model, path)
        checked = check_generation(model, path, min(len(tokenizer), model.config.vocab_size))
        notes.append(f"KV-cache decoder graph ({geo['layers']} layers); ONNX Runtime's greedy loop "
                     f"(slimformer.export_generative.OrtDecoder) gives PyTorch's tokens")
        scale = max(1.0, checked["logit_scale"])  # fp32 error grows with depth and with the logits' size
        if checked["max_abs_diff"] > atol * scale:
            raise SlimformerError(f"ONNX logits differ from PyTorch by {checked['max_abs_diff']:.2e} (> {atol:g} x "
                                  f"the largest |logit| {scale:.1f})")
        return {"kind": "decoder with KV cache", "notes": notes, **checked}
    fbgemm = _fbgemm_layers(model)
    if fbgemm:
        return _requantized(model, tokenizer, path, fbgemm, optimize)
    res = None
    if optimize:
        try:
            res = to_onnx(model, tokenizer, path, atol=atol, fusable=True)
        except SlimformerError as e:
            notes.append(f"no fusable export ({str(e)[:120]}); exported unfused")
    if res is None:
        res = to_onnx(model, tokenizer, path, atol=atol)
    elif optimize:
        from .quantize.ort_fusion import fuse

        try:
            fused = fuse(path, model, tokenizer)
            notes.append(f"fused: {fused['fused']} (max |fused - PyTorch| = {fused['max_abs_diff']:.1e})")
        except SlimformerError as e:
            notes.append(f"not fused ({e}); the exported graph is unfused")
    return {"kind": f"float graph ({res['exporter']} exporter)", "max_abs_diff": res["max_abs_diff"], "notes": notes}


def _rel(a: Any, b: Any) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _fusion_text(fusion: Any) -> str:
    if isinstance(fusion, dict) and fusion.get("fused"):
        return ", ".join(f"{k} x{v}" for k, v in fusion["fused"].items())
    if isinstance(fusion, dict) and fusion.get("skipped"):
        return f"skipped ({str(fusion['skipped'])[:120]})"
    return "none"


def _fbgemm_layers(model: Any) -> list[str]:
    from .quantize.modules import QLinear

    return [n for n, m in model.named_modules() if isinstance(m, QLinear) and m.act != "none"]


def _requantized(model: Any, tokenizer: Any, path: Path, names: list[str], optimize: bool) -> dict[str, Any]:
    """Torch INT8 layers: dequantize them into a copy, let ONNX Runtime quantize the same layers again."""
    import torch
    from torch import nn

    from .data import dummy_inputs
    from .export import OnnxModel, _logits
    from .quantize.onnx_backend import quantize_onnx

    float_copy = copy.deepcopy(model)
    static = False
    for name in names:
        q = float_copy.get_submodule(name)
        static |= q.act == "static"
        lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
        lin.weight.data.copy_(q.dequantized_weight())
        if q.bias is not None:
            lin.bias.data.copy_(q.bias.data)
        parent, _, child = name.rpartition(".")
        setattr(float_copy.get_submodule(parent) if parent else float_copy, child, lin)
    probe = dummy_inputs(tokenizer, 3, 21, seed=1)
    probe["attention_mask"][2, 3:] = 0
    with torch.no_grad():
        ref = _logits(model(**probe)).float()
        dequantized = _logits(float_copy(**probe)).float()
    ort = quantize_onnx(float_copy, tokenizer, names, mode="dynamic", embeddings=False, optimize=optimize)
    path.write_bytes(ort.ort.onnx_bytes.numpy().tobytes())
    got = OnnxModel(path)(probe)
    rel, own, torch_own = _rel(got, ref), _rel(got, dequantized), _rel(ref, dequantized)
    tolerance = max(QUANT_TOLERANCE, 2 * torch_own)  # no worse than twice torch's own INT8 error
    if own > tolerance:
        raise SlimformerError(f"the ONNX Runtime INT8 graph differs from the model's FP32 weights by {own:.1%} "
                              f"(> {tolerance:.1%}); quantize with backend: onnxruntime to export it exactly")
    notes = [f"torch INT8 kernels have no ONNX form: {len(names)} layers re-quantized by ONNX Runtime (dynamic "
             f"INT8, per-channel weights); relative difference to the torch INT8 model {rel:.1%}, to the FP32 "
             f"weights {own:.1%} (torch INT8: {torch_own:.1%})"]
    if static:
        notes.append("static INT8 activations are quantized dynamically in ONNX Runtime")
    fusion = ort.config.slimformer.get("onnxruntime", {}).get("fusion")
    if optimize:
        notes.append(f"fusion: {_fusion_text(fusion)}")
    return {"kind": "onnxruntime INT8 graph (re-quantized)", "max_abs_diff": float((got - ref).abs().max()),
            "notes": notes}
