"""Issue 13 figures: PET on Multi30k EN->DE against its teacher, the paper's ablations at the same budget, and
slimformer's pruning + distillation + INT8 on the same teacher.

    # the teacher, 6+6 layers (PET distils a deep teacher into 4+4 computed layers); never trained here
    HF_HUB_OFFLINE=1 .venv/bin/slimformer finetune none --from-config layers=6,d_model=256,ffn=1024,heads=4,vocab=8000 \\
        --task multi30k --data ../shared/data/multi30k --out ~/.cache/slimformer/teachers/multi30k-6x6 \\
        --epochs 4 --lr 1e-3 --batch-size 64 --max-len 64 --label-smoothing 0.1 --beams 5 --seed 42
    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_pet.py \\
        teacher pet no_warmup no_mapping no_sharing no_swap plain_distill seq_kd prune_int8 search
    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_pet.py speed final
    .venv/bin/python benchmarks/bench_pet.py markdown
    # the ablation grid at a 2-epoch budget (pet_2ep.json; the same parts, their own students and work folders)
    flock /tmp/slimformer-heavy.lock env PET_EPOCHS=2 HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \
        benchmarks/bench_pet.py teacher pet no_warmup no_mapping no_swap no_sharing plain_distill
    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_pet.py smoke  # ~2 min

Every variant gets the same budget: BUDGET["epochs"] passes over the training pairs in total (warm-up epochs
included; a variant without warm-up distils for all of them). Students are tuned on nothing and scored on
`val` (dev) by the training parts; `final` scores the saved students once on test_2016_flickr and
test_2017_flickr. `speed` times translation of real dev sentences (beam 5 and greedy at batch 1, beam 5 at
batch 32), every model interleaved in one run through the shared measurement. `smoke` is the real-data
check of the code path: a freshly built, untrained tiny Marian as teacher, the warm-up labels and one PET step.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import common
import torch

THREADS = 2
TEACHER = Path(os.environ.get("PET_TEACHER", common.CACHE / "teachers" / "multi30k-6x6"))
MAX_LEN = 64
# PET_EPOCHS=N runs every part at a smaller (or larger) shared budget, warm-up a quarter of it, into its own
# result file, students folder and work folders (pet_2ep.json, ~/.cache/slimformer/pet_2ep/, work/pet_2ep-*)
EPOCHS = float(os.environ.get("PET_EPOCHS", "4"))
BUDGET = {"epochs": EPOCHS, "warmup_epochs": EPOCHS / 4, "batch_size": 64, "lr": 1e-3, "seed": 42}
RESULT = "pet" if EPOCHS == 4 else f"pet_{EPOCHS:g}ep"
STUDENTS = common.CACHE / RESULT
# PET's student widths scaled to a 256-wide teacher (paper: 512 -> encoder 320 / decoder 240, FFN 2x); HF Marian
# keeps one width for both stacks
STUDENT = {"width": 128, "encoder_ffn": 256, "decoder_ffn": 192, "heads": 4}
VARIANTS: dict[str, dict[str, Any]] = {
    "pet": {},
    "no_warmup": {"warmup": None},
    "no_mapping": {"warmup": {"head": "linear"}},
    "no_sharing": {"student": {"encoder_layers": 2, "decoder_layers": 2}, "share": None},
    "no_swap": {"share": {"swap_qk": False}},
    "plain_distill": {"student": {"encoder_layers": 4, "decoder_layers": 4}, "share": None, "warmup": None,
                      "hidden": 0.0},
}


def _task() -> Any:
    from slimformer import tasks

    return tasks.load("multi30k", common.DATA / "multi30k", beams=5)


def _teacher() -> tuple[Any, Any]:
    from slimformer import models

    if not (TEACHER / "model.safetensors").exists():
        raise SystemExit(f"no teacher in {TEACHER}: train it with the command in this script's docstring")
    return models.load(str(TEACHER), task=_task())


def pet_config(variant: str) -> Any:
    """The `pet` step of a variant at the shared budget."""
    from slimformer.distill.pet import Pet

    over = dict(VARIANTS[variant])
    student = {**STUDENT, **over.pop("student", {})}
    warmup = over.pop("warmup", {})
    share = over.pop("share", {})
    warm_epochs = BUDGET["warmup_epochs"] if warmup is not None else 0.0
    return Pet(student=student, share=share, warmup=None if warmup is None else
               {"epochs": warm_epochs, "lr": BUDGET["lr"], **warmup},
               epochs=BUDGET["epochs"] - warm_epochs, lr=BUDGET["lr"], batch_size=BUDGET["batch_size"], **over)


def _row(model: Any, tok: Any, task: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from slimformer import models
    from slimformer.bench import saved_size

    m = task.evaluate(model, tok, "dev", max_len=128)
    return {"params": models.num_params(model), "size_mb": round(saved_size(model) / 1e6, 2),
            "dev_bleu": round(m["bleu"], 2), "dev_chrf": round(m["chrf"], 2), **extra}


def teacher() -> dict[str, Any]:
    model, tok = _teacher()
    return _row(model, tok, _task(), {"config": {k: getattr(model.config, k) for k in (
        "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "encoder_attention_heads", "vocab_size")}})


def variant(name: str) -> dict[str, Any]:
    """Train one variant from the teacher (resumable), save it, score it on dev."""
    from slimformer import models
    from slimformer.distill.pet import pet
    from slimformer.steps import Context

    model, tok = _teacher()
    task = _task()
    cfg = pet_config(name)
    ctx = Context(tokenizer=tok, task=task, work_dir=common.CACHE / "work" / f"{RESULT}-{name}", teacher=model,
                  seed=BUDGET["seed"], max_len=MAX_LEN, resume=True)
    t0 = time.perf_counter()
    student, stats = pet(model, model, cfg, ctx)
    minutes = round((time.perf_counter() - t0) / 60, 1)
    models.save(student, tok, STUDENTS / name)
    return _row(student, tok, task, {"train_minutes": minutes, "recipe": cfg.describe(),
                                     "stats": json.loads(json.dumps(stats, default=str))})


def prune_int8() -> dict[str, Any]:
    """slimformer's structural families on the same teacher: 2+2 layers, half the heads, a quarter of the FFN,
    distilled (kd + ce) for the same epochs, then dynamic INT8."""
    from slimformer.recipe import EvalSettings, compress

    model, tok = _teacher()
    steps = [{"step": "drop_layers", "keep": 2, "strategy": "alternate", "stack": "encoder"},
             {"step": "drop_layers", "keep": 2, "strategy": "alternate", "stack": "decoder"},
             {"step": "prune_heads", "keep": 0.5, "importance_examples": 256},
             {"step": "prune_ffn", "keep": 0.25, "importance_examples": 256},
             {"step": "distill", "kd": 1.0, "ce": 0.5, "epochs": BUDGET["epochs"], "lr": BUDGET["lr"],
              "batch_size": BUDGET["batch_size"]},
             {"step": "quantize_dynamic", "backend": "torch", "guard": False}]
    ev = EvalSettings(max_len=MAX_LEN, seq_len=32, batches=[1], latency_budget_s=2.0, tolerance=None)
    t0 = time.perf_counter()
    res = compress(model, tok, steps, STUDENTS / "prune_int8", _task(), ev, seed=BUDGET["seed"])
    return _row(res.model, tok, _task(), {"train_minutes": round((time.perf_counter() - t0) / 60, 1),
                                          "recipe": steps})


def seq_kd() -> dict[str, Any]:
    """Sequence-level KD (Kim & Rush 2016) into the unshared 4+4 student of `plain_distill`: the `distill` step
    with `targets: teacher` (the teacher's beam-5 translations of the training sources) and plain CE, the same
    epochs; the teacher's translation time is counted in train_minutes."""
    from slimformer import models
    from slimformer.distill import Distill, distill
    from slimformer.distill.pet import PetStudent, build_student

    model, tok = _teacher()
    task = _task()
    student = build_student(model, PetStudent(**STUDENT, encoder_layers=4, decoder_layers=4), BUDGET["seed"])
    cfg = Distill(targets="teacher", target_beams=5, kd=0.0, ce=1.0, epochs=BUDGET["epochs"], lr=BUDGET["lr"],
                  batch_size=BUDGET["batch_size"])
    t0 = time.perf_counter()
    student, stats = distill(student, model, tok, task, cfg, common.CACHE / "work" / f"{RESULT}-seq_kd", BUDGET["seed"],
                             MAX_LEN, resume=True)
    minutes = round((time.perf_counter() - t0) / 60, 1)
    models.save(student, tok, STUDENTS / "seq_kd")
    return _row(student, tok, task, {"train_minutes": minutes, "sequence_level": stats.get("sequence_level")})


def search() -> dict[str, Any]:
    """share_pairs' search on the PET student: every pairing of 4 layers, 200 steps each, dev loss."""
    from slimformer.distill.pet import build_student, PetStudent
    from slimformer.share import SharePairs, share_pairs
    from slimformer.steps import Context

    model, tok = _teacher()
    student = build_student(model, PetStudent(**STUDENT), BUDGET["seed"])
    cfg = SharePairs(encoder="search", decoder="search", search_steps=200, search_examples=256,
                     batch_size=BUDGET["batch_size"], lr=BUDGET["lr"])
    ctx = Context(tokenizer=tok, task=_task(), work_dir=common.CACHE / "work" / f"{RESULT}-search", seed=BUDGET["seed"],
                  max_len=MAX_LEN)
    t0 = time.perf_counter()
    _, report = share_pairs(student, cfg, ctx)
    return {**report, "minutes": round((time.perf_counter() - t0) / 60, 1)}


def _saved() -> dict[str, Any]:
    from slimformer import models

    out = {"teacher": _teacher()[0]}
    for name in [*VARIANTS, "seq_kd", "prune_int8"]:
        if (STUDENTS / name / "model.safetensors").exists():
            out[name] = models.load(str(STUDENTS / name), task=_task())[0]
    return out


def final() -> dict[str, Any]:
    """BLEU / chrF of the teacher and every saved student on both Flickr test sets (run once, at the end)."""
    task = _task()
    tok = _teacher()[1]
    out: dict[str, Any] = {}
    for name, model in _saved().items():
        out[name] = {s: {k: round(v, 2) for k, v in task.evaluate(model, tok, s, max_len=128).items()}
                     for s in ("test_2016_flickr", "test_2017_flickr")}
    out["signature"] = task.last_signature
    return out


def speed(n_single: int = 8, n_batch: int = 32) -> dict[str, Any]:
    """ms per sentence translating real dev sentences: beam 5 and greedy at batch 1 (n_single sentences one by
    one per call), beam 5 at batch 32; all models interleaved per setting."""
    from slimformer.bench import compare_latency

    tok = _teacher()[1]
    saved = _saved()
    sources = [p.text for p in _task().split("dev")]
    out: dict[str, Any] = {"threads": THREADS, "sentences_b1": n_single, "sentences_b32": n_batch}
    for label, beams, batch in (("beam5_b1", 5, 1), ("greedy_b1", 1, 1), ("beam5_b32", 5, n_batch)):
        picked = sources[:n_single] if batch == 1 else sources[:n_batch]
        groups = [picked[i:i + batch] for i in range(0, len(picked), batch)]
        encoded = [tok(g, padding=True, return_tensors="pt") for g in groups]

        def runner(model: Any) -> Any:
            def call(_: Any) -> None:
                with torch.inference_mode():
                    for enc in encoded:
                        model.generate(**{k: v for k, v in enc.items() if k != "token_type_ids"}, num_beams=beams,
                                       max_new_tokens=MAX_LEN, do_sample=False)
            return call

        lat = compare_latency({k: runner(m) for k, m in saved.items()}, tok, batch=batch, seq_len=0,
                              n_threads=THREADS, budget_s=20.0)
        base = lat["teacher"].median_ms
        out[label] = {k: {"ms_per_sentence": round(v.median_ms / len(picked), 2),
                          "sentences_per_s": round(1000 * len(picked) / v.median_ms, 2),
                          "speedup_vs_teacher": round(base / v.median_ms, 2), "latency": v.summary()}
                      for k, v in lat.items()}
    from slimformer.generation import generation_profile

    out["encoder_decoder_split"] = {k: generation_profile(m, tok, 32, 32, 1, THREADS, runs=3)
                                    for k, m in saved.items() if k in ("teacher", "pet")}
    return out


def smoke() -> dict[str, Any]:
    """The code path on real data in about two minutes: an untrained 6+6 Marian of width 64 as teacher, the
    4-class labels of 64 Multi30k pairs, and one warm-up and one distillation step of the PET student."""
    from slimformer import models
    from slimformer.distill.pet import Pet, pet
    from slimformer.models.scratch import translation_model
    from slimformer.steps import Context

    task = _task()
    task.splits["train"] = task.splits["train"][:2000]  # the tokenizer is trained on these
    model, tok = translation_model(task, "layers=6,d_model=64,ffn=128,heads=4,vocab=2000")
    cfg = Pet(student={"width": 32, "encoder_ffn": 64, "decoder_ffn": 48, "heads": 2}, warmup={"max_steps": 1},
              max_steps=1, batch_size=16, max_train_examples=64)
    ctx = Context(tokenizer=tok, task=task, work_dir=common.CACHE / "work" / "pet-smoke", teacher=model, seed=1,
                  max_len=MAX_LEN)
    t0 = time.perf_counter()
    student, stats = pet(model, model, cfg, ctx)
    return {"seconds": round(time.perf_counter() - t0, 1), "teacher_params": models.num_params(model),
            "student_params": models.num_params(student), "label_shares": stats["warmup"]["label_shares"],
            "distill_loss": stats["distill"]["train_loss"], "layer_maps": stats["distill"]["layer_maps"]}


PARTS: dict[str, Any] = {"teacher": teacher, **{v: (lambda v=v: variant(v)) for v in VARIANTS},
                         "seq_kd": seq_kd, "prune_int8": prune_int8, "search": search, "final": final, "speed": speed, "smoke": smoke}


def main(parts: list[str]) -> None:
    torch.set_num_threads(THREADS)
    common.run_parts(RESULT, PARTS, parts, markdown, {"threads": THREADS, "budget": BUDGET, "student": STUDENT})


def markdown() -> str:
    r = common.read_result(RESULT)
    if r is None:
        return "(no results yet)"
    rows = [n for n in ("teacher", *VARIANTS, "seq_kd", "prune_int8") if n in r]
    if not rows:
        return "(no model rows yet)"
    t = r.get("teacher", {})
    sp = r.get("speed", {}).get("beam5_b1", {})
    fin = r.get("final", {})
    out = ["| model | params | vs teacher | MB | dev BLEU / chrF | test2016 BLEU | test2017 BLEU | beam-5 b1 "
           "speed-up | train min |", "|---|---|---|---|---|---|---|---|---|"]
    for n in rows:
        x = r[n]
        less = f"-{100 * (1 - x['params'] / t['params']):.1f}%" if t and n != "teacher" else ""
        f16 = fin.get(n, {}).get("test_2016_flickr", {}).get("bleu", "")
        f17 = fin.get(n, {}).get("test_2017_flickr", {}).get("bleu", "")
        out.append(f"| {n} | {x['params'] / 1e6:.2f}M | {less} | {x['size_mb']} | {x['dev_bleu']} / {x['dev_chrf']} | "
                   f"{f16} | {f17} | {sp.get(n, {}).get('speedup_vs_teacher', '')} | {x.get('train_minutes', '')} |")
    return "\n".join(out)


if __name__ == "__main__":
    common.parts_cli("bench_pet.py", PARTS, main, markdown)
