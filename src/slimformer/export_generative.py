"""ONNX export of decoder-only language models with the KV cache, and a greedy decoder loop in ONNX Runtime.

One graph serves prefill and decode: inputs `input_ids` [B, S], `attention_mask` [B, P + S], `position_ids`
[B, S] and the cache `past_key.i` / `past_value.i` [B, kv_heads, P, head_dim] for every layer; outputs `logits`
[B, S, V] and `present_key.i` / `present_value.i` [B, kv_heads, P + S, head_dim]. Every dimension is dynamic.
torch.export specializes a length of 0 or 1, so the cache is never empty: the loop starts from one zero
position that the attention mask hides (its position id is not used), which is exactly what an empty
cache computes. `OrtDecoder.generate` runs the loop; export checks it against PyTorch's greedy tokens.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SlimformerError, check


class _Step(nn.Module):
    """The model's forward with the cache as explicit tensors (what the exporter traces)."""

    def __init__(self, model: nn.Module, layers: int):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True)
        present: list[torch.Tensor] = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def geometry(model: nn.Module) -> dict[str, Any]:
    """Layers and per-layer (kv heads, head dim) of a decoder-only model's cache."""
    from .models import get_adapter

    ad = get_adapter(model)
    check(not ad.is_multi_stack(model) and ad.stacks(model)[0].name == "decoder",
          f"{type(model).__name__} is not a decoder-only language model")
    att = ad.attention(model)
    return {"layers": len(att), "kv_heads": [a.kv_heads for a in att], "head_dim": [a.head_dim for a in att],
            "eos_token_id": model.generation_config.eos_token_id, "pad_token_id": model.generation_config.pad_token_id}


def export_decoder(model: nn.Module, path: str | os.PathLike, opset: int = 18) -> dict[str, Any]:
    """Write the KV-cache step graph of a decoder-only LM to `path`; the geometry goes into its metadata."""
    import onnx

    geo = geometry(model)
    n = geo["layers"]
    model = model.eval()
    step = _Step(model, n).eval()
    b, s, p, t = (torch.export.Dim(x) for x in ("batch", "seq", "past", "total"))
    ids = torch.randint(0, model.config.vocab_size, (2, 3))
    mask = torch.ones(2, 5, dtype=torch.long)
    pos = torch.arange(2, 5)[None].repeat(2, 1)
    past = [torch.zeros(2, geo["kv_heads"][i // 2], 2, geo["head_dim"][i // 2]) for i in range(2 * n)]
    names_past = [f"past_{kind}.{i}" for i in range(n) for kind in ("key", "value")]
    names_out = ["logits"] + [f"present_{kind}.{i}" for i in range(n) for kind in ("key", "value")]
    with torch.no_grad():
        program = torch.onnx.export(step, (ids, mask, pos, past), dynamo=True, opset_version=opset,
                                    input_names=["input_ids", "attention_mask", "position_ids", *names_past],
                                    output_names=names_out, external_data=False,
                                    dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: t},
                                                    "position_ids": {0: b, 1: s}, "past": [{0: b, 2: p}] * (2 * n)})
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "slimformer.decoder", json.dumps(geo)
    onnx.save(proto, str(path))
    return geo


class OrtDecoder:
    """Greedy generation with the exported step graph in ONNX Runtime (batch of equal-length prompts)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        check(Path(path).is_file(), f"no ONNX file at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 (ORT raises its own types)
            raise SlimformerError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from e
        meta = self.session.get_modelmeta().custom_metadata_map.get("slimformer.decoder")
        check(meta is not None, f"{path} is not a slimformer decoder graph (no cache geometry in its metadata)")
        self.geo = json.loads(meta)

    def __call__(self, input_ids: torch.Tensor) -> Any:
        """Logits of whole sequences, as `model(input_ids=...)` gives them (so `perplexity` scores this graph)."""
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.from_numpy(self.prefill_logits(input_ids.numpy())))

    def prefill_logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits [B, S, V] of a prompt (the first step of the loop)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        bsz, length = ids.shape
        feed = {"input_ids": ids, "attention_mask": np.concatenate([np.zeros((bsz, 1), np.int64),
                                                                      np.ones((bsz, length), np.int64)], axis=1),
                "position_ids": np.tile(np.arange(length, dtype=np.int64), (bsz, 1))}
        for i in range(self.geo["layers"]):
            shape = (bsz, self.geo["kv_heads"][i], 1, self.geo["head_dim"][i])
            feed[f"past_key.{i}"] = feed[f"past_value.{i}"] = np.zeros(shape, np.float32)
        return self.session.run(["logits"], feed)[0]

    def generate(self, input_ids: np.ndarray, max_new_tokens: int = 16, times: list[float] | None = None,
                 stop_at_eos: bool = True) -> np.ndarray:
        """Greedy tokens (prompt + new); `times` receives the ms of every graph run (the first is the prefill)."""
        import time

        ids = np.asarray(input_ids, dtype=np.int64)
        bsz, length = ids.shape
        n = self.geo["layers"]
        past = {}
        for i in range(n):
            shape = (bsz, self.geo["kv_heads"][i], 1, self.geo["head_dim"][i])
            past[f"past_key.{i}"] = np.zeros(shape, np.float32)
            past[f"past_value.{i}"] = np.zeros(shape, np.float32)
        mask = np.concatenate([np.zeros((bsz, 1), np.int64), np.ones((bsz, length), np.int64)], axis=1)
        pos = np.tile(np.arange(length, dtype=np.int64), (bsz, 1))
        step_ids, out = ids, [ids]
        eos = self.geo.get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        done = np.zeros(bsz, bool)
        for _ in range(max_new_tokens):
            t = time.perf_counter()
            res = self.session.run(None, {"input_ids": step_ids, "attention_mask": mask, "position_ids": pos, **past})
            if times is not None:
                times.append((time.perf_counter() - t) * 1000)
            nxt = res[0][:, -1].argmax(-1).astype(np.int64)
            pad = self.geo.get("pad_token_id")
            if pad is not None:
                nxt = np.where(done, pad, nxt)
            out.append(nxt[:, None])
            done |= np.isin(nxt, list(eos))
            if done.all() and stop_at_eos:
                break
            for j in range(n):
                past[f"past_key.{j}"], past[f"past_value.{j}"] = res[1 + 2 * j], res[2 + 2 * j]
            step_ids = nxt[:, None]
            mask = np.concatenate([mask, np.ones((bsz, 1), np.int64)], axis=1)
            pos = pos[:, -1:] + 1
        return np.concatenate(out, axis=1)


def check_generation(model: nn.Module, path: str | os.PathLike, vocab: int, new_tokens: int = 8) -> dict[str, Any]:
    """Greedy tokens of the ONNX loop against PyTorch's generate on seeded prompts; raises when they differ."""
    g = torch.Generator().manual_seed(3)
    prompts = torch.randint(min(1000, vocab - 1), vocab, (2, 7), generator=g)
    with torch.no_grad():
        ref = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                             do_sample=False, num_beams=1)
    dec = OrtDecoder(path)
    got = dec.generate(prompts.numpy(), new_tokens)
    same = got.shape == tuple(ref.shape) and bool((got == ref.numpy()).all())
    if not same:
        raise SlimformerError("the ONNX decoder loop generates other tokens than PyTorch (greedy, 2 prompts)")
    with torch.no_grad():
        logits = model(input_ids=prompts).logits.numpy()
    diff = float(np.abs(dec.prefill_logits(prompts.numpy()) - logits).max())
    return {"generated_tokens_equal": True, "new_tokens": int(ref.shape[1] - prompts.shape[1]), "max_abs_diff": diff,
            "logit_scale": float(np.abs(logits).max())}


# --- encoder-decoder: encoder, first decoder step, decoder step with the cache ------------------------------
SEQ2SEQ_FILES = ("", ".decoder-init", ".decoder")  # suffixes of the three graphs beside the encoder's name


class _Encoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _DecoderStep(nn.Module):
    """One decoder step; with `past` the self-attention cache and the cross-attention keys/values are inputs."""

    def __init__(self, model: nn.Module, layers: int, with_past: bool):
        super().__init__()
        self.model, self.layers, self.with_past = model, layers, with_past

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        own, cross = DynamicCache(config=self.model.config), DynamicCache(config=self.model.config)
        if self.with_past:
            for i in range(self.layers):
                own.update(past[4 * i], past[4 * i + 1], i)
                cross.update(past[4 * i + 2], past[4 * i + 3], i)
        out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=decoder_input_ids, cache=EncoderDecoderCache(own, cross), use_cache=True)
        present: list[torch.Tensor] = []
        for i in range(self.layers):
            s, c = out.cache.self_attention_cache.layers[i], out.cache.cross_attention_cache.layers[i]
            present += [s.keys, s.values] + ([] if self.with_past else [c.keys, c.values])
        return (out.logits, *present)


def seq2seq_paths(path: str | os.PathLike) -> list[Path]:
    """encoder (path itself), first decoder step, decoder step with the cache."""
    p = Path(path)
    return [p.with_name(p.stem + suffix + p.suffix) for suffix in SEQ2SEQ_FILES]


def export_seq2seq(model: nn.Module, path: str | os.PathLike, opset: int = 18) -> dict[str, Any]:
    """Write the encoder and the two decoder graphs of an encoder-decoder; geometry in the encoder's metadata."""
    import onnx

    from .models import get_adapter

    model = model.eval()
    att = [a for a in get_adapter(model).attention(model) if a.unit.startswith("decoder.") and a.kind == "self"]
    cross = [a for a in get_adapter(model).attention(model) if a.kind == "cross"]
    n = len(att)
    geo = {"layers": n, "heads": [a.kv_heads for a in att], "cross_heads": [a.kv_heads for a in cross],
           "head_dim": [a.head_dim for a in att], "decoder_start_token_id": model.config.decoder_start_token_id,
           "eos_token_id": model.generation_config.eos_token_id, "pad_token_id": model.generation_config.pad_token_id}
    b, t, p = (torch.export.Dim(x) for x in ("batch", "source", "past"))
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        hidden = _Encoder(model)(ids, mask)
    start = torch.full((2, 1), int(geo["decoder_start_token_id"] or 0))
    names_c = [f"cross_{k}.{i}" for i in range(n) for k in ("key", "value")]
    names_s = [f"self_{k}.{i}" for i in range(n) for k in ("key", "value")]
    graphs = [
        (_Encoder(model), (ids, mask), ["input_ids", "attention_mask"], ["encoder_hidden_states"],
         {"input_ids": {0: b, 1: t}, "attention_mask": {0: b, 1: t}}),
        (_DecoderStep(model, n, False), (start, hidden, mask, []),
         ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
         ["logits"] + [x for i in range(n) for x in (names_s[2 * i], names_s[2 * i + 1], names_c[2 * i],
                                                     names_c[2 * i + 1])],
         {"decoder_input_ids": {0: b}, "encoder_hidden_states": {0: b, 1: t}, "encoder_attention_mask": {0: b, 1: t},
          "past": []}),
    ]
    past = []
    for i in range(n):
        past += [torch.zeros(2, geo["heads"][i], 2, geo["head_dim"][i]), torch.zeros(2, geo["heads"][i], 2,
                 geo["head_dim"][i]), torch.zeros(2, geo["cross_heads"][i], 6, geo["head_dim"][i]),
                 torch.zeros(2, geo["cross_heads"][i], 6, geo["head_dim"][i])]
    in_past = [x for i in range(n) for x in (f"past_{names_s[2 * i]}", f"past_{names_s[2 * i + 1]}", names_c[2 * i],
                                             names_c[2 * i + 1])]
    graphs.append((_DecoderStep(model, n, True), (start, hidden, mask, past),
                   ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask", *in_past],
                   ["logits"] + names_s,
                   {"decoder_input_ids": {0: b}, "encoder_hidden_states": {0: b, 1: t},
                    "encoder_attention_mask": {0: b, 1: t},
                    "past": [d for _ in range(n) for d in ({0: b, 2: p}, {0: b, 2: p}, {0: b, 2: t}, {0: b, 2: t})]}))
    for (module, args, ins, outs, dyn), target in zip(graphs, seq2seq_paths(path)):
        with torch.no_grad():
            program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=opset, input_names=ins,
                                        output_names=outs, dynamic_shapes=dyn, external_data=False)
        proto = program.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = "slimformer.seq2seq", json.dumps(geo)
        onnx.save(proto, str(target))
    return geo


class OrtSeq2Seq:
    """Greedy translation with the three exported graphs in ONNX Runtime (cross keys/values computed once)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.sessions = []
        for p in seq2seq_paths(path):
            check(p.is_file(), f"no ONNX file at {p} (an encoder-decoder export writes three graphs)")
            self.sessions.append(ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]))
        self.geo = json.loads(self.sessions[0].get_modelmeta().custom_metadata_map["slimformer.seq2seq"])

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int = 32) -> np.ndarray:
        enc, init, step = self.sessions
        ids, mask = np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64)
        hidden = enc.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        tok = np.full((ids.shape[0], 1), int(self.geo["decoder_start_token_id"] or 0), np.int64)
        out, n = [tok], self.geo["layers"]
        eos = self.geo.get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        done = np.zeros(ids.shape[0], bool)
        res = init.run(None, {"decoder_input_ids": tok, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
        past = {}
        for i in range(n):
            for j, name in enumerate((f"past_self_key.{i}", f"past_self_value.{i}", f"cross_key.{i}",
                                      f"cross_value.{i}")):
                past[name] = res[1 + 4 * i + j]
        for k in range(max_new_tokens):
            nxt = res[0][:, -1].argmax(-1).astype(np.int64)
            if self.geo.get("pad_token_id") is not None:
                nxt = np.where(done, self.geo["pad_token_id"], nxt)
            out.append(nxt[:, None])
            done |= np.isin(nxt, list(eos))
            if done.all() or k == max_new_tokens - 1:
                break
            res = step.run(None, {"decoder_input_ids": nxt[:, None], "encoder_hidden_states": hidden,
                                  "encoder_attention_mask": mask, **past})
            for i in range(n):
                past[f"past_self_key.{i}"], past[f"past_self_value.{i}"] = res[1 + 2 * i], res[2 + 2 * i]
        return np.concatenate(out, axis=1)


def check_translation(model: nn.Module, path: str | os.PathLike, vocab: int, new_tokens: int = 8) -> dict[str, Any]:
    """Greedy tokens of the ONNX loop against PyTorch's (logits processors off) on seeded, padded inputs."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(min(1000, vocab - 1), vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             num_beams=1, forced_eos_token_id=None, bad_words_ids=None, no_repeat_ngram_size=0,
                             repetition_penalty=1.0, min_length=0, min_new_tokens=0)
    got = OrtSeq2Seq(path).generate(ids.numpy(), mask.numpy(), new_tokens)
    if got.shape != tuple(ref.shape) or not (got == ref.numpy()).all():
        raise SlimformerError("the ONNX encoder-decoder loop generates other tokens than PyTorch (greedy)")
    return {"generated_tokens_equal": True, "new_tokens": int(ref.shape[1] - 1)}
