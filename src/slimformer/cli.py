"""The `slimformer` command line: thin wrappers that parse, check the output path, call the library and
print with rich. Nothing heavy is imported at module level (torch and transformers load inside a command),
so `slimformer --help` is fast. Exit codes and the one-line error format: entry.py."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from .outputs import check_output, check_work_dir, write_errors, write_marker

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make Transformer NLP models small and fast, and measure what each choice costs. "
                       "Exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted.")

MODEL_HELP = "local model directory, a Hugging Face hub id, or 'minilm' (the packaged all-MiniLM-L6-v2)"
TASK_HELP = ("sst2, cola, mrpc, classification (CSV/TSV/JSONL/datasets; see --text-col); stsb, similarity; "
             "multi30k, translation; wikitext2, lm")
TEXT_COL = typer.Option(None, help="tables: the text column")
PAIR_COL = typer.Option(None, help="tables: the second-text column (pairs)")
LABEL_COL = typer.Option(None, help="tables: the label (or score) column")
MODE = typer.Option(None, help="similarity: embedding (sentence encoder, cosine; default) or regression")
SRC = typer.Option(None, help="translation: source language (file suffix or column), e.g. en")
TGT = typer.Option(None, help="translation: target language, e.g. de")
BEAMS = typer.Option(None, help="translation: beam size for evaluation (default 5)")
CONTEXT = typer.Option(None, help="language modelling: perplexity window in tokens (default 1024)")
STRIDE = typer.Option(None, help="language modelling: window stride (default 512)")
MAX_EVAL_TOKENS = typer.Option(None, help="language modelling: score only the first N tokens (quick runs)")
THREADS_HELP = "torch threads for the whole run (default: the cores this process may use)"
OVERWRITE_HELP = ("replace an existing output that is not an earlier slimformer output (never one that is, "
                  "holds or lies inside an input)")


def _setup(threads: Optional[int] = None) -> None:
    """Quiet the libraries and fix torch's thread count (imports torch: call it inside commands only)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight-loading bars; training keeps its own
    if threads:
        torch.set_num_threads(threads)


def _task(task: str, data: str, **options: Any) -> Any:
    """Load a task; options the user did not give (None) are left to the loader's defaults."""
    from . import tasks

    return tasks.load(task, data, **options)


def _check_json(path: Optional[Path], inputs: list[Any]) -> None:
    """--json may replace an earlier result file, never a directory, a link or an input."""
    if path is not None:
        check_output(path, inputs, kind="file", flag="--json", replaceable=True)


def _out(obj: Any, path: Optional[Path]) -> None:
    if path is not None:
        from .fsutil import write_json

        write_json(path, obj)


def _work_dir(out: Path, suffix: str) -> Path:
    """The hidden sibling `.{out}.{suffix}` where a resumable run keeps its checkpoints."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.{suffix}"


@app.command()
def profile(model: str = typer.Argument(..., help=MODEL_HELP),
            seq_len: int = typer.Option(128, min=1, help="sequence length of the dummy batch"),
            batch: int = typer.Option(1, min=1),
            threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: the cores this "
                                                  "process may use, os.sched_getaffinity)"),
            runs: int = typer.Option(10, min=1, help="timed forward passes (median and spread reported)"),
            new_tokens: int = typer.Option(32, min=1, help="generative models: tokens decoded for the per-token time"),
            json_out: Optional[Path] = typer.Option(None, "--json", help="also write the profile as JSON")) -> None:
    """Parameters, FLOPs, measured latency and memory per component (embeddings, attention, cross-attention,
    FFN, head); for generative models also prefill (or encoder) time, per-token decode time with the KV cache,
    tokens/s and KV-cache memory."""
    _check_json(json_out, [model])
    _setup(threads)
    from . import models
    from .profile import profile_model
    from .progress import show
    from .report import kv_table, profile_table

    m, tok = models.load(model)
    models.io.check_positions(m, **{"--seq-len": seq_len})
    prof = profile_model(m, tok, seq_len, batch, threads, runs)
    show(profile_table(prof))
    if hasattr(m, "can_generate") and m.can_generate():
        from .generation import generation_profile

        prof["generation"] = generation_profile(m, tok, seq_len, new_tokens, batch, threads, max(1, runs // 3))
        show(kv_table(prof["generation"], f"generation: prompt {seq_len}, {new_tokens} new tokens"))
    _out(prof, json_out)


@app.command()
def finetune(model: str = typer.Argument(..., help=MODEL_HELP),
             task: str = typer.Option(..., help=TASK_HELP), data: str = typer.Option(..., help="data path"),
             out: Path = typer.Option(..., help="output directory (new, empty, or an earlier slimformer output)"),
             epochs: float = typer.Option(3.0), lr: float = typer.Option(5e-5), batch_size: int = typer.Option(32),
             max_len: int = typer.Option(128), seed: int = typer.Option(42),
             max_train_examples: Optional[int] = typer.Option(None, help="train on a random subset"),
             label_smoothing: float = typer.Option(0.0, min=0.0, max=0.99, help="label-smoothed cross-entropy"),
             resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint of an "
                                         "interrupted run (kept in .OUT.train/ until the run succeeds; "
                                         "without --resume they are dropped)"),
             save_steps: Optional[int] = typer.Option(None, min=1, help="checkpoint every N optimizer steps (for "
                                                      "--resume); default: a tenth of the run, 1 to 200"),
             threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
             overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
             from_config: Optional[str] = typer.Option(None, "--from-config", help="translation: train a new "
                                                       "model of this size (marian-tiny, marian-small, or "
                                                       "layers=3,d_model=256,ffn=1024,heads=4,vocab=8000) with a "
                                                       "tokenizer trained on the data; MODEL is then ignored"),
             text_col: Optional[str] = TEXT_COL, pair_col: Optional[str] = PAIR_COL,
             label_col: Optional[str] = LABEL_COL, mode: Optional[str] = MODE, src: Optional[str] = SRC,
             tgt: Optional[str] = TGT, beams: Optional[int] = BEAMS, context: Optional[int] = CONTEXT,
             stride: Optional[int] = STRIDE, max_eval_tokens: Optional[int] = MAX_EVAL_TOKENS) -> None:
    """Fine-tune (or, with --from-config, train) a model for the task on the HF Trainer (works under torchrun /
    accelerate launch); the head comes from the task."""
    check_output(out, [model, data], overwrite)
    work = _work_dir(out, "train")
    check_work_dir(work, [model, data])
    from .runlock import run_lock

    with run_lock(work, out):  # one run per output: a second one fails at once
        _finetune(model, task, data, out, work, resume, threads, from_config,
                  dict(epochs=epochs, lr=lr, batch_size=batch_size, max_len=max_len, seed=seed,
                       max_train_examples=max_train_examples, label_smoothing=label_smoothing, save_steps=save_steps),
                  dict(text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
                       beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens))


def _finetune(model: str, task: str, data: str, out: Path, work: Path, resume: bool, threads: Optional[int],
              from_config: Optional[str], train: dict[str, Any], options: dict[str, Any]) -> None:
    """The body of `finetune` (which holds the work directory's lock)."""
    _setup(threads)
    from . import models
    from .evaluate import evaluate_task
    from .fsutil import write_json
    from .progress import console
    from .train import TrainConfig, finetune as run_finetune, is_main_process, set_seed

    td = _task(task, data, **options)
    cfg = TrainConfig(**train)
    set_seed(cfg.seed)  # a newly created head starts from the same weights for the same seed
    if from_config:
        from .models.scratch import translation_model

        m, tok = translation_model(td, from_config, cfg.seed)
    else:
        m, tok = models.load(model, task=td)
    models.io.check_positions(m, **{"--max-len": cfg.max_len})
    old = work / "checkpoints"
    if not resume and is_main_process() and old.is_dir() and any(old.iterdir()):
        console.print(f"[yellow]starting afresh: removing the checkpoints of an earlier run in {old} (pass --resume "
                      f"to continue it instead)[/]", soft_wrap=True)  # else a later --resume could pick them
        shutil.rmtree(old)
    with write_errors(out, cleanup=[work]):
        m, stats = run_finetune(m, tok, td, cfg, work, resume=resume)
        if is_main_process():
            metrics = evaluate_task(m, tok, td, None, cfg.max_len)
            models.save(m, tok, out)
            write_json(out / "train_stats.json", {"config": cfg.model_dump(), "stats": stats, "eval": metrics})
    if is_main_process():
        shutil.rmtree(work, ignore_errors=True)  # the checkpoints only serve --resume of a failed run
        console.print(f"[green]saved {out}[/green]  {td.eval_split(td.default_split)}: {json.dumps(metrics)}  "
                      f"({stats['train_samples_per_second']:.1f} examples/s)")


@app.command()
def evaluate(model: str = typer.Argument(..., help=MODEL_HELP), task: str = typer.Option(..., help=TASK_HELP),
             data: str = typer.Option(...),
             split: Optional[str] = typer.Option(None, help="default: dev (test for language modelling)"),
             max_len: int = typer.Option(128), seq_len: int = typer.Option(128, help="sequence length of the "
                                                                              "latency measurement"),
             threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: the usable cores)"),
             json_out: Optional[Path] = typer.Option(None, "--json"),
             text_col: Optional[str] = TEXT_COL, pair_col: Optional[str] = PAIR_COL,
             label_col: Optional[str] = LABEL_COL, mode: Optional[str] = MODE, src: Optional[str] = SRC,
             tgt: Optional[str] = TGT, beams: Optional[int] = BEAMS, context: Optional[int] = CONTEXT,
             stride: Optional[int] = STRIDE, max_eval_tokens: Optional[int] = MAX_EVAL_TOKENS) -> None:
    """Task metric(s), parameters, size on disk, latency at batch 1 and 32 (median, spread, reliability)."""
    _check_json(json_out, [model, data])
    _setup(threads)
    from . import models
    from .evaluate import evaluate_task, footprint
    from .progress import show
    from .report import kv_table

    td = _task(task, data, text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
               beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens)
    split = td.eval_split(split or td.default_split)
    m, tok = models.load(model, task=td)
    models.io.check_positions(m, **{"--max-len": max_len, "--seq-len": seq_len})
    res = {"model": model, "task": td.name, "split": split, **evaluate_task(m, tok, td, split, max_len),
           **footprint(m, tok, seq_len, n_threads=threads)}
    if getattr(td, "last_signature", ""):
        res["sacrebleu"] = td.last_signature
    show(kv_table(res, f"{model} on {td.name}/{split}"))
    _out(res, json_out)


@app.command()
def compress(model: str = typer.Argument(..., help=MODEL_HELP),
             recipe: Path = typer.Option(..., help="recipe YAML (see `slimformer steps`)"),
             out: Path = typer.Option(..., help="output directory (model, ledger.jsonl, summary.json): new, "
                                      "empty, or an earlier slimformer output"),
             task: Optional[str] = typer.Option(None, help=TASK_HELP + " (overrides the recipe)"),
             data: Optional[str] = typer.Option(None, help="data path (overrides the recipe)"),
             restart: bool = typer.Option(False, "--restart", help="ignore finished steps of an interrupted run"),
             text_col: Optional[str] = TEXT_COL, pair_col: Optional[str] = PAIR_COL,
             label_col: Optional[str] = LABEL_COL, mode: Optional[str] = MODE, src: Optional[str] = SRC,
             tgt: Optional[str] = TGT, beams: Optional[int] = BEAMS, context: Optional[int] = CONTEXT,
             stride: Optional[int] = STRIDE, max_eval_tokens: Optional[int] = MAX_EVAL_TOKENS,
             threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
             overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)) -> None:
    """Run a recipe; evaluate and record after every step; resume an interrupted run by re-running it."""
    inputs = [model, data, recipe]
    check_output(out, inputs, overwrite)
    work = _work_dir(Path(os.path.realpath(out)), "work")
    check_work_dir(work, inputs)
    _setup(threads)
    from .progress import console
    from .recipe import run_recipe_file
    from .report import comparison_line

    from .runlock import run_lock

    options = dict(text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
                   beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens)
    with run_lock(work, out), write_errors(out, cleanup=[work]):  # one run per output: a second fails at once
        result = run_recipe_file(model, recipe, out, task, data, restart,
                                 {k: v for k, v in options.items() if v is not None})
    console.print(comparison_line(result.comparison))
    console.print(f"[green]saved {out}[/green] (reload with slimformer.load('{out}'))")


@app.command()
def export(model: str = typer.Argument(..., help=MODEL_HELP + "; any output of finetune or compress"),
           onnx: Optional[Path] = typer.Option(None, help="output .onnx file (the tokenizer goes to "
                                               "<stem>-tokenizer/)"),
           sentence_transformers: Optional[Path] = typer.Option(
               None, "--sentence-transformers", help="a sentence encoder: output folder that "
               "sentence_transformers.SentenceTransformer(DIR) loads (mean pooling, normalisation)"),
           compressed_tensors: Optional[Path] = typer.Option(
               None, "--compressed-tensors", help="a language model from quantize_weights: output folder in the "
               "compressed-tensors pack-quantized format that transformers' from_pretrained loads (with the "
               "compressed-tensors package) and vLLM serves"),
           embedding: bool = typer.Option(False, "--embedding", help="with --onnx, a sentence encoder: mean "
                                          "pooling and L2 normalisation inside the graph (output "
                                          "sentence_embedding)"),
           atol: float = typer.Option(1e-4, help="max allowed |ONNX - PyTorch| on a probe batch (language "
                                      "models: times the largest |logit|)"),
           optimize: bool = typer.Option(False, "--optimize", help="fuse the graph with ONNX Runtime's transformer "
                                         "optimizer (Attention, EmbedLayerNorm, SkipLayerNorm, BiasGelu), "
                                         "checked against PyTorch"),
           int4: Optional[int] = typer.Option(None, "--int4", min=16, help="decoder-only LMs: float MatMul weights "
                                              "and the embedding table as 4-bit (ONNX Runtime MatMulNBits / "
                                              "GatherBlockQuantized) with this block size, e.g. 32. A model from "
                                              "quantize_weights bits 4 keeps its own codes with or without it"),
           int4_accuracy: int = typer.Option(4, "--int4-accuracy", help="4-bit MatMuls (--int4, or a model from "
                                             "quantize_weights bits 4): 4 multiplies in INT8, activations "
                                             "quantized per block (fastest); 0 in float on dequantized weights"),
           overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file (an earlier "
                                          "export to the same path is replaced without it)")) -> None:
    """Export any slimformer model to one ONNX file (dynamic batch and length) checked in ONNX Runtime;
    a model quantized through ONNX Runtime is written as its stored INT8 graph. A sentence encoder can also
    be written as a sentence-transformers folder, a language model from quantize_weights as a
    compressed-tensors folder (both checked by loading them with their library)."""
    from .deploy import check_export_paths, export_onnx

    folders = {"--sentence-transformers": sentence_transformers, "--compressed-tensors": compressed_tensors}
    if sum(x is not None for x in (onnx, *folders.values())) != 1:
        raise typer.BadParameter("give exactly one of --onnx, --sentence-transformers and --compressed-tensors")
    if (embedding or int4) and onnx is None:
        raise typer.BadParameter("--embedding and --int4 go with --onnx")
    if onnx is not None:
        check_export_paths(onnx, [model], overwrite)
    for flag, folder in folders.items():
        if folder is not None:
            check_output(folder, [model], overwrite, flag=flag)
    _setup()
    from . import models
    from .progress import console

    m, tok = models.load(model)
    if sentence_transformers is not None:
        from .export_embeddings import write_sentence_transformers

        res = write_sentence_transformers(m, tok, sentence_transformers)
        done = (f"wrote {sentence_transformers}", f"{res['bytes'] / 1e6:.1f} MB of weights), min cosine to the "
                f"model's embeddings {res['min_cosine']:.6f}")
    elif compressed_tensors is not None:
        from .export_compressed import write_compressed_tensors

        res = write_compressed_tensors(m, tok, compressed_tensors)
        done = (f"wrote {compressed_tensors}", f"{res['bytes'] / 1e6:.1f} MB of weights); transformers loads "
                f"it: max |logits - slimformer's| = {res['max_abs_diff']:.2e}")
    else:
        res = export_onnx(m, tok, onnx, atol=atol, optimize=optimize, embedding=embedding, int4=int4,
                          int4_accuracy=int4_accuracy)
        cos = f", min cosine to the model's embeddings {res['min_cosine']:.6f}" if embedding else ""
        done = (f"wrote {onnx}", f"{res['bytes'] / 1e6:.1f} MB, {res['kind']}), max |ONNX - PyTorch| = "
                f"{res['max_abs_diff']:.2e}{cos}")
    for note in res["notes"]:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(f"[green]{done[0]}[/green] ({done[1]}")


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="output directories of `slimformer compress`"),
           out: Optional[Path] = typer.Option(None, help="with several runs: where comparison.md/png go"),
           overwrite: bool = typer.Option(False, "--overwrite", help="allow --out to be a non-empty folder that "
                                          "is not a slimformer output")) -> None:
    """Write report.md + report.png (metric vs size and latency per step) into each RUN; with several runs,
    also a comparison of their final models (comparison.md + comparison.png in --out, default the first RUN)."""
    from .progress import console
    from .report import compare_runs, load_summary, print_ledger, write_report

    new_out = out is not None and not out.exists()
    if out is not None:
        check_output(out, [], overwrite, kind="container")
    summaries = [load_summary(run) for run in runs]  # every run checked before anything is written
    for run, summary in zip(runs, summaries):
        print_ledger(summary["rows"], summary.get("comparison"))
        console.print(f"[green]wrote {write_report(run)}[/green]")
    if len(runs) > 1:
        target = out or runs[0]
        console.print(f"[green]wrote {compare_runs(runs, target)}[/green]")
        if new_out:
            write_marker(target, "comparison")


@app.command()
def steps() -> None:
    """List the recipe steps and their fields."""
    from .progress import console
    from .steps import REGISTRY, known_steps

    for name in known_steps():
        cfg_cls = REGISTRY[name][0]
        console.print(f"[bold]{name}[/bold]: {(cfg_cls.__doc__ or '').strip().splitlines()[0]}")
        for fname, f in cfg_cls.model_fields.items():
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            console.print(f"    {fname}: {default}  {f.description or ''}")


@app.command()
def demo(data_root: Path = typer.Option(Path("../shared/data"), help="folder holding sst2/"),
         out: Path = typer.Option(Path("runs/demo"), help="where the teacher, student and report go (new, empty, "
                                  "or an earlier demo folder)"),
         quick: bool = typer.Option(False, "--quick", help="smoke run: small subsets, minutes not tens of minutes"),
         recipe: Path = typer.Option(Path("recipes/demo.yaml"), help="the example recipe to run"),
         threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
         overwrite: bool = typer.Option(False, "--overwrite", help="allow OUT to be a non-empty folder that is "
                                        "not an earlier demo folder")) -> None:
    """The main job: fine-tune MiniLM on SST-2, evaluate, profile, compress with a recipe, report."""
    inputs = [data_root, recipe]
    check_output(out, inputs, overwrite, kind="container")
    teacher, student = (out / "teacher-quick", out / "student-quick") if quick else (out / "teacher", out / "student")
    for sub in ([student] if (teacher / "model.safetensors").exists() else [teacher, student]):
        check_output(sub, inputs, overwrite)  # the folders the demo replaces: refused now, not after training
    _setup(threads)
    from .demo import run_demo

    run_demo(data_root, out, recipe, quick)


from . import cli_plan as _cli_plan  # noqa: E402,F401  (registers `slimformer plan`)


def main() -> None:
    """Entry point: user errors become one red `error:` line; exit codes 1 (error), 2 (usage), 130 (Ctrl-C)."""
    from .entry import run

    run(app)


if __name__ == "__main__":
    main()
