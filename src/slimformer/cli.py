"""The `slimformer` command line: thin wrappers that parse, call the library and print with rich."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import SlimformerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make Transformer NLP models small and fast, and measure what each choice costs.")

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


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()


def _task(task: str, data: str, **options: Any) -> Any:
    """Load a task; options the user did not give (None) are left to the loader's defaults."""
    from . import tasks

    return tasks.load(task, data, **options)


def _out(obj: Any, path: Optional[Path]) -> None:
    if path is not None:
        from .fsutil import write_json

        write_json(path, obj)


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
    from . import models
    from .profile import profile_model
    from .progress import show
    from .report import kv_table, profile_table

    m, tok = models.load(model)
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
             out: Path = typer.Option(..., help="output directory"),
             epochs: float = typer.Option(3.0), lr: float = typer.Option(5e-5), batch_size: int = typer.Option(32),
             max_len: int = typer.Option(128), seed: int = typer.Option(42),
             max_train_examples: Optional[int] = typer.Option(None, help="train on a random subset"),
             resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in OUT"),
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
    from . import models
    from .evaluate import evaluate_task
    from .fsutil import write_json
    from .progress import console
    from .train import TrainConfig, finetune as run_finetune, is_main_process, set_seed

    td = _task(task, data, text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
               beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_len=max_len, seed=seed,
                      max_train_examples=max_train_examples)
    if Path(model).exists() and Path(model).resolve() == out.resolve():
        raise SlimformerError("--out must differ from the input model directory")
    set_seed(seed)  # a newly created head starts from the same weights for the same seed
    if from_config:
        from .models.scratch import translation_model

        m, tok = translation_model(td, from_config, seed)
    else:
        m, tok = models.load(model, task=td)
    work = out.parent / f".{out.name}.train"
    m, stats = run_finetune(m, tok, td, cfg, work, resume=resume)
    if is_main_process():
        metrics = evaluate_task(m, tok, td, None, max_len)
        models.save(m, tok, out)
        write_json(out / "train_stats.json", {"config": cfg.model_dump(), "stats": stats, "eval": metrics})
        console.print(f"[green]saved {out}[/green]  {td.eval_split()}: {json.dumps(metrics)}  "
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
    from . import models
    from .evaluate import evaluate_task, footprint
    from .progress import show
    from .report import kv_table

    td = _task(task, data, text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
               beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens)
    split = td.eval_split(split or td.default_split)
    m, tok = models.load(model, task=td)
    res = {"model": model, "task": td.name, "split": split, **evaluate_task(m, tok, td, split, max_len),
           **footprint(m, tok, seq_len, n_threads=threads)}
    if getattr(td, "last_signature", ""):
        res["sacrebleu"] = td.last_signature
    show(kv_table(res, f"{model} on {td.name}/{split}"))
    _out(res, json_out)


@app.command()
def compress(model: str = typer.Argument(..., help=MODEL_HELP),
             recipe: Path = typer.Option(..., help="recipe YAML (see `slimformer steps`)"),
             out: Path = typer.Option(..., help="output directory (model, ledger.jsonl, summary.json)"),
             task: Optional[str] = typer.Option(None, help=TASK_HELP + " (overrides the recipe)"),
             data: Optional[str] = typer.Option(None, help="data path (overrides the recipe)"),
             restart: bool = typer.Option(False, "--restart", help="ignore finished steps of an interrupted run"),
             text_col: Optional[str] = TEXT_COL, pair_col: Optional[str] = PAIR_COL,
             label_col: Optional[str] = LABEL_COL, mode: Optional[str] = MODE, src: Optional[str] = SRC,
             tgt: Optional[str] = TGT, beams: Optional[int] = BEAMS, context: Optional[int] = CONTEXT,
             stride: Optional[int] = STRIDE, max_eval_tokens: Optional[int] = MAX_EVAL_TOKENS) -> None:
    """Run a recipe; evaluate and record after every step; resume an interrupted run by re-running it."""
    from .progress import console
    from .recipe import run_recipe_file
    from .report import comparison_line

    options = dict(text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode, src=src, tgt=tgt,
                   beams=beams, context=context, stride=stride, max_eval_tokens=max_eval_tokens)
    result = run_recipe_file(model, recipe, out, task, data, restart,
                             {k: v for k, v in options.items() if v is not None})
    console.print(comparison_line(result.comparison))
    console.print(f"[green]saved {out}[/green] (reload with slimformer.load('{out}'))")


@app.command()
def export(model: str = typer.Argument(..., help=MODEL_HELP),
           onnx: Path = typer.Option(..., help="output .onnx file"),
           atol: float = typer.Option(1e-4, help="max allowed |ONNX - PyTorch| on a probe batch"),
           optimize: bool = typer.Option(False, "--optimize", help="fuse the graph with ONNX Runtime's transformer "
                                         "optimizer (Attention, EmbedLayerNorm, SkipLayerNorm, BiasGelu), "
                                         "checked against PyTorch")) -> None:
    """Export to ONNX (dynamic batch and length) and check the outputs in ONNX Runtime."""
    from . import models
    from .errors import SlimformerError
    from .export import to_onnx
    from .progress import console

    m, tok = models.load(model)
    res = to_onnx(m, tok, onnx, atol=atol, fusable=optimize)
    if optimize:
        from .quantize.ort_fusion import fuse

        try:
            fused = fuse(onnx, m, tok)
            console.print(f"fused: {fused['fused']} (max |fused - PyTorch| = {fused['max_abs_diff']:.1e})")
        except SlimformerError as e:
            console.print(f"[yellow]not fused ({e}); the exported graph is unfused[/yellow]")
    tok.save_pretrained(onnx.parent / f"{onnx.stem}-tokenizer")
    console.print(f"[green]wrote {onnx}[/green] ({onnx.stat().st_size / 1e6:.1f} MB), "
                  f"max |ONNX - PyTorch| = {res['max_abs_diff']:.2e}")


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="output directories of `slimformer compress`"),
           out: Optional[Path] = typer.Option(None, help="with several runs: where comparison.md/png go")) -> None:
    """Write report.md + report.png (metric vs size and latency per step) into each RUN; with several runs,
    also a comparison of their final models (comparison.md + comparison.png in --out, default the first RUN)."""
    from .progress import console
    from .report import compare_runs, load_summary, print_ledger, write_report

    for run in runs:
        summary = load_summary(run)
        print_ledger(summary["rows"], summary.get("comparison"))
        console.print(f"[green]wrote {write_report(run)}[/green]")
    if len(runs) > 1:
        console.print(f"[green]wrote {compare_runs(runs, out or runs[0])}[/green]")


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
         out: Path = typer.Option(Path("runs/demo"), help="where the teacher, student and report go"),
         quick: bool = typer.Option(False, "--quick", help="smoke run: small subsets, minutes not tens of minutes"),
         recipe: Path = typer.Option(Path("recipes/demo.yaml"), help="the example recipe to run")) -> None:
    """The main job: fine-tune MiniLM on SST-2, evaluate, profile, compress with a recipe, report."""
    from .demo import run_demo

    run_demo(data_root, out, recipe, quick)


def main() -> None:
    """Entry point: user errors become one red line and exit code 1."""
    _quiet_libraries()
    from pydantic import ValidationError

    try:
        app()
    except SlimformerError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except ValidationError as e:
        err = e.errors()[0]
        typer.secho(f"error: {'.'.join(map(str, err['loc']))}: {err['msg']}", fg="red", err=True)
        sys.exit(1)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted (re-run the same command to resume)", fg="yellow", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
