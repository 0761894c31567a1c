"""Sentence-embedding peers side by side with slimformer's best encoder, in one process (issue 15).

sentence-transformers' ONNX extra pins transformers 4, so this runs in its own venv:

    python3 -m venv /work/venv-embed
    /work/venv-embed/bin/pip install torch==2.13.0 'sentence-transformers[onnx]' 'model2vec[distill]'
    flock /tmp/slimformer-heavy.lock /work/venv-embed/bin/python benchmarks/peers/embedding_peers.py \
        MINILM_DIR A.onnx [B.onnx ...] --threads 2

A.onnx, ...: slimformer's pooled ONNX files (`slimformer export --onnx A.onnx --embedding`, tokenizer in
A-tokenizer/), e.g. the ones `bench_embeddings.py --keep DIR` leaves in DIR.

Candidates: all-MiniLM-L6-v2 in sentence-transformers (PyTorch, the reference), its `backend="onnx"` export,
its dynamic INT8 export (`export_dynamic_quantized_onnx_model`), Model2Vec distilled from the same model
(static token embeddings, PCA to 256), and slimformer's pooled ONNX files run with ONNX Runtime. Each is
measured as its users call it (`encode(texts, batch_size=b)`: length-sorted, dynamically padded batches; the
slimformer file through the same loop): STS-B dev Spearman, MB on disk, sentences/s at batch 1, 32 and 128
(candidates interleaved, median of rounds) and top-10 neighbour overlap with the reference. Writes JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # slimformer's reliability rules (pure Python), not its models
DATA = ROOT.parent / "shared" / "data"
CORPUS = ["val.en", "test_2016_flickr.en", "test_2017_flickr.en", "test_2017_mscoco.en"]


def read_corpus() -> list[str]:
    seen: dict[str, None] = {}
    for f in CORPUS:
        for line in (DATA / "multi30k" / f).read_text(encoding="utf-8").splitlines():
            if line.strip():
                seen.setdefault(line.strip(), None)
    return list(seen)


def read_stsb_dev() -> tuple[list[str], list[str], list[float]]:
    a, b, gold = [], [], []
    for line in (DATA / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines():
        f = line.split("\t")
        if len(f) >= 7:
            a.append(f[5])
            b.append(f[6])
            gold.append(float(f[4]))
    return a, b, gold


def slimformer_encoder(onnx: str, tok_dir: str, threads: int):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    tok = AutoTokenizer.from_pretrained(tok_dir)

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts = {}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], truncation=True, max_length=128, padding=True, return_tensors="np")
            feed = {"input_ids": enc["input_ids"].astype(np.int64),
                    "attention_mask": enc["attention_mask"].astype(np.int64)}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            e = sess.run(None, feed)[0]
            for j, i in enumerate(idx):
                parts[i] = e[j]
        return np.stack([parts[i] for i in range(len(texts))])

    return encode


def size_mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("minilm")
    ap.add_argument("slimformer_onnx", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--b1-sentences", type=int, default=800)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "embedding_peers.json"))
    args = ap.parse_args()
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    from slimformer.cpuload import CpuSample, others_cores
    from slimformer.reliability import OTHERS_TOL, sample_problems

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="embed-peers-"))
    src = work / "minilm"
    shutil.copytree(args.minilm, src)
    t0 = time.time()
    ref = SentenceTransformer(str(src), device="cpu")
    onnx = SentenceTransformer(str(src), device="cpu", backend="onnx")  # exports onnx/model.onnx
    onnx.save_pretrained(str(src))
    flags = Path("/proc/cpuinfo").read_text()
    qconf = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
    export_dynamic_quantized_onnx_model(onnx, qconf, str(src))
    qfile = f"onnx/model_qint8_{qconf}.onnx"
    int8 = SentenceTransformer(str(src), device="cpu", backend="onnx", model_kwargs={"file_name": qfile})
    from model2vec.distill import distill

    m2v = distill(model_name=str(src), pca_dims=256)
    m2v.save_pretrained(str(work / "m2v"))
    build_s = round(time.time() - t0, 1)
    cands = {
        "sentence-transformers (PyTorch)": lambda t, b: ref.encode(t, batch_size=b, normalize_embeddings=True),
        "sentence-transformers ONNX": lambda t, b: onnx.encode(t, batch_size=b, normalize_embeddings=True),
        f"sentence-transformers ONNX INT8 ({qconf})": lambda t, b: int8.encode(t, batch_size=b,
                                                                             normalize_embeddings=True),
        "model2vec (256, distilled)": lambda t, b: m2v.encode(t, batch_size=b),
    }
    for f in args.slimformer_onnx:
        p = Path(f)
        cands[f"slimformer {p.stem}"] = slimformer_encoder(str(p), str(p.parent / f"{p.stem}-tokenizer"),
                                                           args.threads)
    sizes = {
        "sentence-transformers (PyTorch)": size_mb([src / "model.safetensors"]),
        "sentence-transformers ONNX": size_mb([src / "onnx" / "model.onnx"]),
        f"sentence-transformers ONNX INT8 ({qconf})": size_mb([src / qfile]),
        "model2vec (256, distilled)": size_mb([p for p in (work / "m2v").iterdir() if p.suffix == ".safetensors"]),
        **{f"slimformer {Path(f).stem}": size_mb([Path(f)]) for f in args.slimformer_onnx},
    }
    a, b, gold = read_stsb_dev()
    corpus = read_corpus()
    rows = {}
    ref_nb = None
    for name, enc in cands.items():
        ea, eb = enc(a, 64), enc(b, 64)
        cos = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(ea, eb)]
        e = enc(corpus, 64)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -2)
        nb = np.argsort(-sim, axis=1)[:, :10]
        ref_nb = nb if ref_nb is None else ref_nb
        ov = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(nb, ref_nb)]))
        rows[name] = {"variant": name, "stsb_dev_spearman": round(100 * float(spearmanr(gold, cos)[0]), 2),
                      "mb": sizes[name], "top10_overlap": round(ov, 4)}
        print(rows[name], flush=True)
    for bs in (1, 32, 128):
        texts = corpus[:args.b1_sentences] if bs == 1 else corpus
        for enc in cands.values():
            enc(texts[:2 * bs], bs)  # warm-up
        times = {k: [] for k in cands}
        before = CpuSample.take()
        for _ in range(args.rounds):
            for k, enc in cands.items():
                t = time.perf_counter()
                enc(texts, bs)
                times[k].append(time.perf_counter() - t)
        after = CpuSample.take()
        others = others_cores(before, after)
        base = len(texts) / statistics.median(times["sentence-transformers (PyTorch)"])
        for k, ts in times.items():
            sps = len(texts) / statistics.median(ts)
            rows[k][f"sent_s_b{bs}"] = round(sps, 1)
            rows[k][f"speedup_b{bs}"] = round(sps / base, 2)
            rows[k][f"passes_b{bs}_s"] = [round(t, 3) for t in ts]
            problems = sample_problems([t * 1000 for t in ts])
            if others is not None and others > OTHERS_TOL:
                problems.append((2.0, f"other processes used {others:.1f} cores during the timing"))
            rows[k][f"reliable_b{bs}"] = not problems
            rows[k][f"warning_b{bs}"] = "; ".join(r for _, r in problems)
        print(f"batch {bs}: " + ", ".join(f"{k} {r[f'sent_s_b{bs}']}/s" for k, r in rows.items()), flush=True)
    import sentence_transformers
    import transformers

    out = {"benchmark": "embedding_peers", "when": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads,
           "rounds": args.rounds, "corpus_sentences": len(corpus), "b1_sentences": args.b1_sentences,
           "build_s": build_s, "versions": {"sentence_transformers": sentence_transformers.__version__,
                                            "transformers": transformers.__version__, "torch": torch.__version__},
           "quantization_config": qconf, "rows": list(rows.values())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
