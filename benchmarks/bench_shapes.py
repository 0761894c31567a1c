"""Issue "Every Transformer shape" figures: the Multi30k EN->DE teacher, SmolLM2-135M on WikiText-2, the packaged
all-MiniLM-L6-v2 as a sentence encoder on STS-B, and where the time goes in each shape.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_shapes.py mt_teacher smollm2 minilm_stsb profiles
    python benchmarks/bench_shapes.py markdown

The translation teacher is trained by the CLI command in docs/BENCHMARKS.md (this script never trains it).
"""
from __future__ import annotations

import json
import time
from typing import Any

import common
import torch

RESULT = "shapes"
THREADS = 2


def mt_teacher() -> dict[str, Any]:
    """BLEU / chrF (sacreBLEU, beam 5) of the cached Multi30k teacher on both Flickr test sets."""
    from slimformer import models, tasks
    from slimformer.bench import saved_size

    path = common.CACHE / "teachers" / "multi30k"
    if not (path / "model.safetensors").exists():
        raise SystemExit(f"no Multi30k teacher in {path}: train it with the command in docs/BENCHMARKS.md")
    task = tasks.load("multi30k", common.DATA / "multi30k", beams=5)
    model, tok = models.load(str(path), task=task)
    stats = json.loads((path / "train_stats.json").read_text())
    row: dict[str, Any] = {"params": models.num_params(model), "size_mb": round(saved_size(model) / 1e6, 2),
                           "train_minutes": round(stats["stats"]["train_runtime_s"] / 60, 1),
                           "config": {k: getattr(model.config, k) for k in ("d_model", "encoder_layers",
                                      "decoder_layers", "encoder_ffn_dim", "encoder_attention_heads", "vocab_size")},
                           "train": stats["config"]}
    for split in ("dev", "test_2016_flickr", "test_2017_flickr"):
        t0 = time.perf_counter()
        m = task.evaluate(model, tok, split, max_len=128)
        row[split] = {k: round(v, 2) for k, v in m.items()}
        row[split]["seconds"] = round(time.perf_counter() - t0, 1)
    row["signature"] = task.last_signature
    return row


def smollm2(context: int = 1024, stride: int = 512) -> dict[str, Any]:
    """WikiText-2 test perplexity of the dequantized SmolLM2-135M, plus prefill / decode latency at batch 1."""
    from slimformer import models, tasks
    from slimformer.bench import saved_size

    task = tasks.load("wikitext2", common.DATA / "wikitext2", context=context, stride=stride)
    model, tok = models.load("smollm2", task=task)
    t0 = time.perf_counter()
    ppl = task.evaluate(model, tok, "test")["perplexity"]
    tokens = len(task.stream(tok, "test"))
    row = {"perplexity": round(ppl, 3), "context": context, "stride": stride, "test_tokens": tokens,
           "eval_minutes": round((time.perf_counter() - t0) / 60, 1), "params": models.num_params(model),
           "size_mb": round(saved_size(model) / 1e6, 1)}
    return {**row, **smollm2_speed(model, tok)}


def smollm2_speed(model: Any = None, tok: Any = None) -> dict[str, Any]:
    """Prefill and per-token decode time (KV cache) of SmolLM2 at batch 1, prompts of 128 and 512 tokens."""
    from slimformer import models
    from slimformer.generation import generation_profile

    if model is None:
        model, tok = models.load("smollm2")
    return {f"generation_prompt{p}": generation_profile(model, tok, p, 32, 1, THREADS, runs=3) for p in (128, 512)}


def minilm_stsb() -> dict[str, Any]:
    """all-MiniLM-L6-v2 in embedding mode on STS-B, cross-checked with sentence-transformers in the same run."""
    from scipy.stats import spearmanr

    from slimformer import models, tasks

    task = tasks.load("stsb", common.DATA / "stsb", mode="embedding")
    model, tok = models.load("minilm", task=task)
    row: dict[str, Any] = {}
    for split in ("dev", "train"):
        row[split] = {k: round(100 * v, 2) for k, v in task.evaluate(model, tok, split, max_len=256).items()}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(models.resolve("minilm"), device="cpu")
        pairs = task.split("dev")
        a = st.encode([p.text for p in pairs], convert_to_tensor=True, normalize_embeddings=True)
        b = st.encode([p.text_pair for p in pairs], convert_to_tensor=True, normalize_embeddings=True)
        cos = (a * b).sum(-1).tolist()
        row["sentence_transformers_dev_spearman"] = round(100 * spearmanr([p.label for p in pairs], cos)[0], 2)
    except ImportError as e:
        row["sentence_transformers_dev_spearman"] = f"not run: {e}"
    row["published"] = "MTEB STSBenchmark (test split, cosine Spearman): about 82.0; the test split is not shipped"
    return row


def profiles() -> dict[str, Any]:
    """Where parameters, FLOPs and time go, by component kind, for each shape (batch 1)."""
    from slimformer import models
    from slimformer.profile import profile_model

    out = {}
    cases = [("minilm (encoder)", "minilm", 128), ("smollm2 (decoder)", "smollm2", 128)]
    mt = common.CACHE / "teachers" / "multi30k"
    if (mt / "model.safetensors").exists():
        cases.append(("multi30k teacher (encoder-decoder)", str(mt), 32))
    for label, name, seq in cases:
        model, tok = models.load(name)
        prof = profile_model(model, tok, seq_len=seq, batch=1, n_threads=THREADS, runs=10)
        out[label] = {"seq_len": seq, "total_ms": round(prof["total"]["ms"], 2),
                      "gflops": round(prof["total"]["flops"] / 1e9, 3),
                      "by_kind": {k: {kk: round(100 * v, 1) for kk, v in d.items()}
                                  for k, d in prof["by_kind"].items()},
                      "latency": prof["total"].get("latency")}
    return out


PARTS = {"mt_teacher": mt_teacher, "smollm2": smollm2, "smollm2_speed": smollm2_speed, "minilm_stsb": minilm_stsb, "profiles": profiles}


def main(parts: list[str]) -> None:
    torch.set_num_threads(THREADS)
    payload = common.previous_parts(RESULT, set(PARTS) - set(parts))
    for p in parts:  # results are written after every part, so a later failure loses nothing
        t0 = time.perf_counter()
        if p == "smollm2_speed":  # re-times the generation entries of the smollm2 part
            payload["smollm2"] = {**payload.get("smollm2", {}), **smollm2_speed()}
            continue
        payload[p] = PARTS[p]()
        print(f"{p}: {json.dumps(payload[p], default=str)[:600]} ({time.perf_counter() - t0:.0f} s)")
        print(f"wrote {common.write_result(RESULT, {'threads': THREADS, **payload})}")
    print(markdown())


def _size(c: dict[str, Any]) -> str:
    return (f"Marian {c['encoder_layers']}+{c['decoder_layers']} layers, d {c['d_model']}, FFN {c['encoder_ffn_dim']}, "
            f"{c['encoder_attention_heads']} heads, vocab {c['vocab_size']}")


def markdown() -> str:
    r = common.read_result(RESULT)
    if r is None:
        return "(no results yet)"
    out = []
    if "mt_teacher" in r:
        t = r["mt_teacher"]
        out += ["| Multi30k EN->DE teacher | params | MB | train min | dev BLEU / chrF | test2016 BLEU / chrF | "
                "test2017 BLEU / chrF |", "|---|---|---|---|---|---|---|",
                f"| {_size(t['config'])} | {t['params'] / 1e6:.1f}M | {t['size_mb']} | {t['train_minutes']} | "
                f"{t['dev']['bleu']} / {t['dev']['chrf']} | {t['test_2016_flickr']['bleu']} / "
                f"{t['test_2016_flickr']['chrf']} | {t['test_2017_flickr']['bleu']} / "
                f"{t['test_2017_flickr']['chrf']} |",
                "", f"sacreBLEU signature: `{t['signature']}`", ""]
    if "smollm2" in r:
        s = r["smollm2"]
        g1, g5 = s["generation_prompt128"], s["generation_prompt512"]
        out += ["| SmolLM2-135M | WikiText-2 test ppl | context / stride | MB | prefill 128 / 512 (ms) | "
                "decode ms/token | tokens/s | KV cache at 544 tokens |", "|---|---|---|---|---|---|---|---|",
                f"| dequantized fp32 | {s['perplexity']} | {s['context']} / {s['stride']} | {s['size_mb']} | "
                f"{g1['prefill_ms']} / {g5['prefill_ms']} | {g5['decode_ms_per_token']} | {g5['tokens_per_s']} | "
                f"{g5['kv_cache_bytes'] / 1e6:.1f} MB |", ""]
    if "minilm_stsb" in r:
        m = r["minilm_stsb"]
        out += ["| all-MiniLM-L6-v2, embedding mode | STS-B dev Spearman | Pearson | train Spearman | "
                "sentence-transformers, same run (dev) |", "|---|---|---|---|---|",
                f"| slimformer | {m['dev']['spearman']} | {m['dev']['pearson']} | {m['train']['spearman']} | "
                f"{m['sentence_transformers_dev_spearman']} |", ""]
    if "profiles" in r:
        out += ["| model | seq | ms (b1) | GFLOPs | time share by kind (%) |", "|---|---|---|---|---|"]
        for label, p in r["profiles"].items():
            shares = ", ".join(f"{k} {d['time_share']}" for k, d in p["by_kind"].items())
            out.append(f"| {label} | {p['seq_len']} | {p['total_ms']} | {p['gflops']} | {shares} |")
    return "\n".join(out)


if __name__ == "__main__":
    common.parts_cli("bench_shapes.py", PARTS, main, markdown)
