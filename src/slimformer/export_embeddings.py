"""Deployable sentence encoders: a sentence-transformers folder, and ONNX with pooling inside the graph.

- `write_sentence_transformers(model, tokenizer, DIR)`: a folder `sentence_transformers.SentenceTransformer(DIR)`
  loads (Transformer -> mean Pooling -> [Dense] -> Normalize), written without sentence-transformers. Its
  Transformer is a plain Hugging Face model: per-layer head counts and FFN widths that a stock config cannot
  say are zero-padded back to one width per model (a zero head or neuron adds exactly nothing), so the folder
  gives the same embeddings but is only as small as its widest layer. An output projection becomes the Dense
  module. The folder is checked before it is kept: its embeddings, computed from the files as
  sentence-transformers does, must match the model's (cosine > 0.9999).
- `add_pooling(graph)`: appends mean pooling over the attention mask and L2 normalisation to an encoder's
  ONNX graph (output `sentence_embedding`), used by `slimformer export --embedding` on float graphs and on
  ONNX Runtime INT8 graphs alike.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SlimformerError, check

PROBE_TEXTS = ["A man is playing a guitar.", "Two dogs run through a snowy field near the old wooden fence.",
               "ok", "The quick brown fox jumps over the lazy dog while the children watch from the porch "
               "and laugh.", "Zebras"]
PLAIN_OPS = {"keep_heads", "keep_ffn", "keep_layers", "embedding_projection", "drop_token_type_embeddings",
             "drop_pooler", "resize_vocab"}
MIN_COSINE = 0.9999


def sentence_embeddings(model: nn.Module, tokenizer: Any, texts: list[str], max_len: int = 128) -> torch.Tensor:
    """Normalised mean-pooled embeddings of the model (the reference every export is checked against)."""
    from .tasks.similarity import embed

    return embed(model, tokenizer, texts, max_len, normalize=True)


def check_encoder(model: nn.Module, what: str) -> None:
    from .quantize.onnx_backend import is_onnx

    if is_onnx(model):
        check(model.ort.bare, f"{what}: this ONNX Runtime graph has a task head, not a sentence encoder's output")
        return
    from .distill.embeddings import check_sentence_encoder

    check_sentence_encoder(model, None, what)


# --- sentence-transformers folder --------------------------------------------------------------------
def plain_model(model: nn.Module) -> tuple[nn.Module, nn.Linear | None]:
    """(a plain Hugging Face encoder with the model's embeddings of tokens, its output projection or None)."""
    from .distill.projection import PROJ
    from .models import get_adapter
    from .models.surgery import recorded_ops

    ops = {op.get("op") for op in recorded_ops(model)}
    other = sorted(ops - PLAIN_OPS)
    check(not other, f"export --sentence-transformers: the model has {', '.join(other)}, which a plain Hugging "
          f"Face model cannot hold; export --onnx --embedding instead")
    src = copy.deepcopy(model).eval()
    proj = getattr(src, PROJ, None)
    if proj is not None:
        del src._modules[PROJ]
    ad = get_adapter(src)
    cfg = copy.deepcopy(src.config)
    for key in ("num_hidden_layers", "intermediate_size", "num_attention_heads"):
        check(hasattr(cfg, key), f"export --sentence-transformers: {cfg.model_type} configs have no {key}")
    if hasattr(cfg, "slimformer"):
        delattr(cfg, "slimformer")
    cfg.num_hidden_layers = len(ad.layers(src))
    cfg.intermediate_size = max(f.width for f in ad.ffn(src))
    cfg.num_attention_heads = cfg.hidden_size // ad.attention(src)[0].head_dim
    cfg.vocab_size = ad.word_embeddings(src).weight.shape[0]
    dst = type(src)(cfg).eval()
    state = dst.state_dict()
    for name, t in src.state_dict().items():
        if name.startswith("embeddings.token_type_embeddings") and name not in state:
            continue
        check(name in state, f"export --sentence-transformers: no place for {name} in a plain model")
        out = torch.zeros_like(state[name])
        out[tuple(slice(0, n) for n in t.shape)] = t  # kept heads / neurons first, zeros after: exact
        state[name] = out
    if "drop_token_type_embeddings" in ops:  # segment 0 was folded into the positions: no type table
        state["embeddings.token_type_embeddings.weight"].zero_()
    dst.load_state_dict(state, strict=True)
    return dst, proj


def write_sentence_transformers(model: nn.Module, tokenizer: Any, out: str | Path, max_seq_length: int = 256
                                ) -> dict[str, Any]:
    """Write a sentence-transformers folder for a sentence encoder; returns {"bytes", "min_cosine", "notes"}."""
    from safetensors.torch import save_file

    from .fsutil import atomic_dir, weights_size

    check_encoder(model, "export --sentence-transformers")
    from .quantize.onnx_backend import is_onnx

    check(not is_onnx(model), "export --sentence-transformers: an ONNX Runtime INT8 graph has no PyTorch form; "
          "export it with --onnx --embedding")
    plain, proj = plain_model(model)
    from .models.io import max_positions

    max_seq_length = min(max_seq_length, max_positions(model) or max_seq_length)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    width = plain.config.hidden_size
    with atomic_dir(out, kind="sentence-transformers") as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "1_Pooling").mkdir()
        _json(tmp / "1_Pooling" / "config.json", {
            "word_embedding_dimension": width, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
        if proj is not None:
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
            (tmp / "2_Dense").mkdir()
            _json(tmp / "2_Dense" / "config.json", {
                "in_features": proj.in_features, "out_features": proj.out_features, "bias": proj.bias is not None,
                "activation_function": "torch.nn.modules.linear.Identity"})
            tensors = {"linear.weight": proj.weight.detach().contiguous()}
            if proj.bias is not None:
                tensors["linear.bias"] = proj.bias.detach().contiguous()
            save_file(tensors, str(tmp / "2_Dense" / "model.safetensors"), metadata={"format": "pt"})
        n = len(modules)
        modules.append({"idx": n, "name": str(n), "path": f"{n}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (tmp / f"{n}_Normalize").mkdir()
        _json(tmp / "modules.json", modules)
        _json(tmp / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
        _json(tmp / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})
        got = folder_embeddings(tmp, PROBE_TEXTS, max_seq_length)
        want = sentence_embeddings(model, tokenizer, PROBE_TEXTS, max_seq_length)
        cos = float(torch.nn.functional.cosine_similarity(got, want).min())
        if cos < MIN_COSINE:
            raise SlimformerError(f"the sentence-transformers folder's embeddings differ from the model's "
                                  f"(min cosine {cos:.6f} < {MIN_COSINE})")
        size = weights_size(tmp)
    notes = []
    if plain.config.num_attention_heads * plain.config.num_hidden_layers > \
            sum(a.heads for a in _adapter(model).attention(model)) or \
            plain.config.intermediate_size * plain.config.num_hidden_layers > \
            sum(f.width for f in _adapter(model).ffn(model)):
        notes.append("pruned heads / FFN neurons are zero-padded back to one width per model (a plain config "
                     "cannot say per-layer widths): same embeddings, not smaller; ONNX export keeps the savings")
    return {"bytes": size, "min_cosine": cos, "notes": notes}


def _adapter(model: nn.Module) -> Any:
    from .models import get_adapter

    return get_adapter(model)


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def folder_embeddings(folder: Path, texts: list[str], max_len: int) -> torch.Tensor:
    """Embeddings computed from a sentence-transformers folder's files alone, the way sentence-transformers
    does (AutoModel, mean pooling, optional Dense, normalisation), without importing it."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    m = AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = m(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    e = (h * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    dense = folder / "2_Dense" / "model.safetensors"
    if dense.is_file():
        w = load_file(str(dense))
        e = e @ w["linear.weight"].T + (w["linear.bias"] if "linear.bias" in w else 0)
    return torch.nn.functional.normalize(e, dim=-1)


# --- ONNX with pooling ---------------------------------------------------------------------------
def add_pooling(path: Path) -> None:
    """Replace the graph's outputs by `sentence_embedding` [batch, dim]: the mean of the first output's token
    states over `attention_mask`, L2-normalised (sentence-transformers' Pooling + Normalize)."""
    import onnx
    from onnx import TensorProto, helper

    g = onnx.load(str(path))
    graph = g.graph
    names = [i.name for i in graph.input]
    check("attention_mask" in names, "pooling needs the graph's attention_mask input")
    states = graph.output[0].name
    consts = {"sf_axis1": [1], "sf_axis2": [2], "sf_axis_last": [-1]}
    for name, v in consts.items():
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], v))
    graph.initializer.append(helper.make_tensor("sf_eps_count", TensorProto.FLOAT, [], [1e-9]))
    graph.initializer.append(helper.make_tensor("sf_eps_norm", TensorProto.FLOAT, [], [1e-12]))
    node = helper.make_node
    graph.node.extend([
        node("Cast", ["attention_mask"], ["sf_mask_f"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["sf_mask_f", "sf_axis2"], ["sf_mask3"]),
        node("Mul", [states, "sf_mask3"], ["sf_masked"]),
        node("ReduceSum", ["sf_masked", "sf_axis1"], ["sf_sum"], keepdims=0),
        node("ReduceSum", ["sf_mask3", "sf_axis1"], ["sf_count"], keepdims=0),
        node("Max", ["sf_count", "sf_eps_count"], ["sf_count_c"]),
        node("Div", ["sf_sum", "sf_count_c"], ["sf_mean"]),
        node("Mul", ["sf_mean", "sf_mean"], ["sf_sq"]),
        node("ReduceSum", ["sf_sq", "sf_axis_last"], ["sf_sqsum"], keepdims=1),
        node("Sqrt", ["sf_sqsum"], ["sf_norm"]),
        node("Max", ["sf_norm", "sf_eps_norm"], ["sf_norm_c"]),
        node("Div", ["sf_mean", "sf_norm_c"], ["sentence_embedding"]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", None]))
    onnx.save(g, str(path))


def onnx_embeddings(path: str | Path, tokenizer: Any, texts: list[str], max_len: int = 128,
                    batch_size: int = 64) -> torch.Tensor:
    """`sentence_embedding` of a pooled ONNX graph for texts (dynamic padding), in ONNX Runtime."""
    from .export import OnnxModel

    sess = OnnxModel(path)
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(texts[s:s + batch_size], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt")
        if "token_type_ids" in sess.input_names and "token_type_ids" not in enc:
            enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        out.append(sess({k: v for k, v in enc.items()}))
    return torch.cat(out).float()


def pool_and_check(path: Path, model: nn.Module, tokenizer: Any) -> dict[str, Any]:
    """Add pooling to the exported graph at path and check its embeddings against the model's."""
    check_encoder(model, "export --embedding")
    add_pooling(path)
    got = onnx_embeddings(path, tokenizer, PROBE_TEXTS)
    want = sentence_embeddings(model, tokenizer, PROBE_TEXTS)
    cos = float(torch.nn.functional.cosine_similarity(got, want).min())
    if not np.isfinite(cos) or cos < MIN_COSINE:
        raise SlimformerError(f"the pooled ONNX graph's embeddings differ from the model's (min cosine "
                              f"{cos:.6f} < {MIN_COSINE})")
    return {"min_cosine": cos}
