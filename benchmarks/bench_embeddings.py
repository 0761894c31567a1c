"""Sentence embeddings (issue 15): all-MiniLM-L6-v2 against its compressed variants, as its users use it.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_embeddings.py \
        --students runs/embed_3layer runs/embed_pruned --threads 2

The students are `slimformer compress` outputs of recipes/embed_3layer.yaml and recipes/embed_pruned.yaml
(their training budget is in their ledgers). From each model this script derives, without training, the
vocabulary-pruned version (prune_vocab on the distillation corpus: STS-B train, Multi30k English train, MRPC
train) and the ONNX Runtime INT8 graph (quantize_dynamic, backend onnxruntime: fused when ORT's fusion passes
its check against PyTorch), and it measures every
variant in its deployable form (PyTorch, or ONNX with pooling and normalisation inside the graph):

- STS-B dev Spearman (x100) of the cosine of embeddings, computed from the deployed encoder's own output;
- MB on disk (safetensors weights, or the .onnx file);
- sentences/s encoding a real corpus (Multi30k English val + test sets, unseen in training) in length-sorted,
  dynamically padded batches of 1, 32 and 128 (throughput.py), all candidates interleaved in one run, and the
  ratio to the teacher;
- the usual latency at sequence length 128, batch 1 and 32 (bench.compare_latency);
- top-10 neighbour overlap with the teacher over the same corpus (each sentence's 10 nearest others).
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from common import DATA, print_table, write_result

DISTILL_CORPUS = [DATA / "stsb" / "sts-train.csv", DATA / "multi30k" / "train.en", DATA / "mrpc" / "glue_train.tsv"]
EVAL_CORPUS = [DATA / "multi30k" / f for f in ("val.en", "test_2016_flickr.en", "test_2017_flickr.en",
                                               "test_2017_mscoco.en")]
NAME = "embeddings"


class Variant:
    """One model as deployed: a PyTorch module or a pooled ONNX file, with its tokenizer."""

    def __init__(self, name: str, tokenizer: Any, model: Any = None, onnx: Path | None = None, how: str = ""):
        self.name, self.tokenizer, self.model, self.onnx, self.how = name, tokenizer, model, onnx, how

    def encoder(self) -> Callable[[list[str]], Any]:
        from slimformer.throughput import encoder, onnx_encoder

        return onnx_encoder(str(self.onnx), self.tokenizer) if self.onnx else encoder(self.model, self.tokenizer)

    def forward(self) -> Any:
        from slimformer.export import OnnxModel

        return OnnxModel(self.onnx) if self.onnx else self.model

    def megabytes(self) -> float:
        from slimformer.bench import saved_size

        return (self.onnx.stat().st_size if self.onnx else saved_size(self.model)) / 1e6


def encode_all(enc: Callable[[list[str]], Any], texts: list[str], batch: int = 64) -> Any:
    """Embeddings [n, d] of texts in their order (length-sorted batches)."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = {}
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        e = enc([texts[i] for i in idx]).float()
        for j, i in enumerate(idx):
            parts[i] = e[j]
    out = torch.stack([parts[i] for i in range(len(texts))])
    return torch.nn.functional.normalize(out, dim=-1)


def spearman(v: Variant, pairs: list[Any]) -> float:
    from scipy.stats import spearmanr

    texts = sorted({t for p in pairs for t in (p.text, p.text_pair)})
    index = {t: i for i, t in enumerate(texts)}
    e = encode_all(v.encoder(), texts)
    cos = [float(e[index[p.text]] @ e[index[p.text_pair]]) for p in pairs]
    return round(100 * float(spearmanr([p.label for p in pairs], cos)[0]), 2)


def neighbours(emb: Any, k: int = 10) -> Any:
    import torch

    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    return torch.topk(sim, k, dim=1).indices


def overlap(a: Any, b: Any) -> float:
    return round(sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / a.numel(), 4)


def build_variants(teacher_name: str, students: list[Path], work: Path, vocab_texts: list[str]) -> list[Variant]:
    import slimformer as sf
    from slimformer import models, tasks
    from slimformer.deploy import export_onnx
    from slimformer.steps import Context, apply_step

    stsb = tasks.load("stsb", DATA / "stsb")
    out: list[Variant] = []

    def onnx_of(name: str, model: Any, tok: Any, optimize: bool = True) -> Path:
        path = work / f"{name}.onnx"
        export_onnx(model, tok, path, optimize=optimize, embedding=True)
        return path

    def int8(model: Any, tok: Any) -> Any:
        ctx = Context(tokenizer=tok, task=None, work_dir=work / "q")
        return apply_step(copy.deepcopy(model), sf.QuantizeDynamic(backend="onnxruntime", guard=False), ctx)

    def vocab(model: Any, tok: Any) -> tuple[Any, Any, str]:
        m, t, info = sf.prune_vocab(copy.deepcopy(model), tok, vocab_texts, sf.PruneVocab())
        return m, t, info["vocab"]

    teacher, tok = models.load(teacher_name, task=stsb)
    out.append(Variant("teacher", tok, teacher, how="all-MiniLM-L6-v2, PyTorch fp32"))
    out.append(Variant("teacher ONNX fp32", tok, onnx=onnx_of("teacher-fp32", teacher, tok),
                       how="ORT graph (--optimize), pooling inside"))
    out.append(Variant("teacher INT8", tok, onnx=onnx_of("teacher-int8", int8(teacher, tok), tok),
                       how="ORT dynamic INT8"))
    vm, vt, kept = vocab(teacher, tok)
    out.append(Variant("teacher +vocab INT8", vt, onnx=onnx_of("teacher-vocab-int8", int8(vm, vt), vt),
                       how=f"vocab {kept}, ORT INT8"))
    for d in students:
        m, t = models.load(str(d), task=stsb)
        n = d.name.removeprefix("embed_")
        out.append(Variant(n, t, m, how=f"{d.name} (PyTorch fp32)"))
        vm, vt, kept = vocab(m, t)
        out.append(Variant(f"{n} +vocab", vt, vm, how=f"vocab {kept} (PyTorch fp32)"))
        out.append(Variant(f"{n} +vocab INT8", vt, onnx=onnx_of(f"{n}-vocab-int8", int8(vm, vt), vt),
                           how=f"vocab {kept}, ORT INT8"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="minilm")
    ap.add_argument("--students", nargs="*", type=Path, default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--b1-sentences", type=int, default=800, help="batch 1 encodes the first N corpus sentences")
    ap.add_argument("--quick", action="store_true", help="small subsets (a smoke run; figures not for quoting)")
    ap.add_argument("--keep", type=Path, help="copy the pooled ONNX files (and tokenizers) here (for the peers run)")
    args = ap.parse_args()
    import torch

    from slimformer import tasks
    from slimformer.bench import compare_latency
    from slimformer.tasks.sentences import read_sentences
    from slimformer.throughput import sentence_throughput

    torch.set_num_threads(args.threads)
    t0 = time.time()
    pairs = tasks.load("stsb", DATA / "stsb").split("dev")
    corpus = read_sentences([str(p) for p in EVAL_CORPUS])
    vocab_texts = read_sentences([str(p) for p in DISTILL_CORPUS])
    if args.quick:
        pairs, corpus = pairs[:200], corpus[:300]
    result: dict[str, Any] = {"threads": args.threads, "corpus_sentences": len(corpus), "stsb_dev_pairs": len(pairs),
                              "students": [str(s) for s in args.students], "rows": []}
    with tempfile.TemporaryDirectory() as d:
        variants = build_variants(args.teacher, args.students, Path(d), vocab_texts)
        result["build_s"] = round(time.time() - t0, 1)
        ref = None
        for v in variants:  # quality: Spearman, size, neighbours
            emb = encode_all(v.encoder(), corpus)
            nb = neighbours(emb)
            ref = nb if ref is None else ref
            result["rows"].append({"variant": v.name, "how": v.how, "stsb_dev_spearman": spearman(v, pairs),
                                   "mb": round(v.megabytes(), 1), "top10_overlap": overlap(nb, ref)})
            print(result["rows"][-1], flush=True)
        write_result(NAME, result)
        rows = {r["variant"]: r for r in result["rows"]}
        for b in (1, 32, 128):  # throughput on the real corpus, every candidate interleaved
            texts = corpus[:args.b1_sentences] if b == 1 else corpus
            tp = sentence_throughput(lambda: {v.name: v.encoder() for v in variants}, texts, b, args.threads,
                                     args.rounds, variants[0].tokenizer)
            base = tp["teacher"].sentences_per_s
            for name, r in tp.items():
                rows[name][f"sent_s_b{b}"] = round(r.sentences_per_s, 1)
                rows[name][f"speedup_b{b}"] = round(r.sentences_per_s / base, 2)
                rows[name][f"throughput_b{b}"] = r.as_dict()
            print(f"batch {b}: " + ", ".join(f"{k} {r.sentences_per_s:.0f}/s{'' if r.reliable else '?'}"
                                             for k, r in tp.items()), flush=True)
            write_result(NAME, result)
        for b in (1, 32):  # the usual figure: latency at sequence length 128
            smallest = min((v.tokenizer for v in variants), key=len)  # random ids every vocabulary has
            lat = compare_latency({v.name: v.forward() for v in variants}, smallest, b, 128, args.threads,
                                  budget_s=3.0)
            for name, r in lat.items():
                rows[name][f"seq128_b{b}_ms"] = round(r.median_ms, 2)
                rows[name][f"seq128_b{b}"] = r.summary()
            write_result(NAME, result)
        if args.keep:
            import shutil

            args.keep.mkdir(parents=True, exist_ok=True)
            for f in Path(d).iterdir():
                if f.suffix == ".onnx" or f.name.endswith("-tokenizer"):
                    (shutil.copytree if f.is_dir() else shutil.copy)(f, args.keep / f.name)
    result["wall_s"] = round(time.time() - t0, 1)
    path = write_result(NAME, result)
    print_table(result["rows"], f"sentence embeddings, {args.threads} threads (STS-B dev; corpus {len(corpus)} "
                                f"sentences)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
