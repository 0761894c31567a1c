"""Every recipe step on every shape: it works (the model still runs, saves and reloads with identical outputs)
or it refuses with a one-line error saying why. EXPECTED is the table of the README ("Steps x shapes")."""
from __future__ import annotations

import copy

import pytest
import torch

import slimformer as sf
from families import inputs, logits, tiny
from slimformer.errors import SlimformerError
from slimformer.steps import Context, apply_step, parse_step
from slimformer.tasks import Example, TaskData
from slimformer.tasks.similarity import SimilarityTask, last_hidden
from slimformer.tasks.language_modeling import LanguageModelingTask, Text
from slimformer.tasks.translation import Pair, TranslationTask

SHAPES = {"encoder": "bert", "encoder-decoder": "marian", "decoder": "llama"}
WORDS = "the cat sat on a mat while two dogs ran in the park near old trees and a small river".split()

# step -> (recipe fields, {shape: None if it works, else a fragment of the refusal message})
CASES: dict[str, tuple[dict, dict[str, str | None]]] = {
    "prune_heads": ({"keep": 0.5, "importance_examples": 8, "batch_size": 4}, {}),
    "prune_ffn": ({"keep": 0.5, "importance_examples": 8, "batch_size": 4, "criterion": "activation"}, {}),
    "drop_layers": ({"keep": 1}, {"encoder-decoder": "name one with stack:"}),
    "make_student": ({"every": 2}, {}),
    "distill": ({"kd": 1, "ce": 0.5, "max_steps": 2, "batch_size": 4}, {}),
    "distill_general": ({"max_blocks": 4, "block_size": 16, "max_steps": 2, "batch_size": 2},
                        {"encoder-decoder": "masked-LM", "decoder": "masked-LM"}),
    "finetune": ({"epochs": 1, "max_train_examples": 8, "batch_size": 4}, {}),
    "prune_unstructured": ({"sparsity": 0.5}, {}),
    "prune_oneshot": ({"method": "sparsegpt", "sparsity": 0.5, "calib_examples": 8, "batch_size": 4}, {}),
    "prune_movement": ({"sparsity": 0.5, "max_steps": 2, "batch_size": 4, "block": True}, {}),
    "factorize": ({"ratio": 0.5}, {}),
    "factorize_embeddings": ({"size": 8}, {"encoder-decoder": "tied", "decoder": "tied"}),
    "share_layers": ({}, {"encoder-decoder": "name one with stack:"}),
    "share_pairs": ({"encoder": [[0, 1]], "decoder": [[0, 1]]},
                    {"encoder": "inside an encoder-decoder", "decoder": "inside an encoder-decoder"}),
    "pet": ({"student": {"width": 16, "encoder_layers": 2, "decoder_layers": 2, "heads": 2},
             "share": {"encoder": [[0, 1]], "decoder": [[0, 1]]}, "warmup": {"max_steps": 1}, "max_steps": 1,
             "batch_size": 4}, {"encoder": "inside an encoder-decoder", "decoder": "inside an encoder-decoder"}),
    "quantize_dynamic": ({"guard": False}, {}),
    "quantize_static": ({"calib_examples": 8, "guard": False}, {}),
    "quantize_qat": ({"max_steps": 2, "batch_size": 4, "guard": False}, {}),
    "quantize_weights": ({"bits": 4, "group_size": 16, "method": "gptq", "calib_examples": 8, "guard": False}, {}),
    "quantize_mixed": ({"calib_examples": 4, "group_size": 16, "guard": False}, {}),
    "half_precision": ({"guard": False}, {}),
    "distill_embeddings": ({"max_steps": 2, "batch_size": 4, "dim": 16},
                           {"encoder-decoder": "not an encoder", "decoder": "not an encoder"}),
    "prune_vocab": ({}, {"encoder-decoder": "tied", "decoder": "tied"}),
}
SENTENCE_ENCODER_STEPS = {"distill_embeddings"}  # on the encoder shape: a bare BERT with a similarity task


def test_every_step_is_in_the_matrix():
    from slimformer.steps import known_steps

    shipped = {s for s in known_steps() if not s.startswith("test_")}  # tests register their own steps
    assert shipped == set(CASES)


def _task(shape: str, sentence_encoder: bool = False):
    rows = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(6 + i % 5)) for i in range(24)]
    if shape == "encoder" and sentence_encoder:
        exs = [Example(t, float(i % 5), rows[(i + 3) % len(rows)]) for i, t in enumerate(rows)]
        return SimilarityTask("toy-sts", {"train": exs, "dev": exs[:6]}, mode="embedding")
    if shape == "encoder":
        exs = [Example(t, i % 3) for i, t in enumerate(rows)]
        return TaskData("toy", ["a", "b", "c"], {"train": exs, "dev": exs[:6]})
    if shape == "encoder-decoder":
        pairs = [Pair(t, " ".join(reversed(t.split()))) for t in rows]
        return TranslationTask("toy", {"train": pairs, "dev": pairs[:4]}, beams=1, max_new_tokens=4)
    return LanguageModelingTask("toy", {"train": [Text(t) for t in rows], "test": [Text(t) for t in rows[:8]]},
                                context=32, stride=16)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("step", list(CASES))
def test_step_works_or_refuses_in_one_line(step, shape, tokenizer, tmp_path):
    fields, refusals = CASES[step]
    fields = dict(fields)
    if step == "distill_general":
        (tmp_path / "text.txt").write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(40)))
        fields["text"] = str(tmp_path / "text.txt")
    bare = step in SENTENCE_ENCODER_STEPS and shape == "encoder"
    model = tiny(SHAPES[shape])
    if bare:
        model = type(model.base_model)(model.config).eval()
    task = _task(shape, bare)
    ctx = Context(tokenizer=tokenizer, task=task, work_dir=tmp_path / "work", teacher=copy.deepcopy(model).eval(),
                  seed=1, max_len=16)
    batch = inputs(model, seq=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = refusals.get(shape)
    try:
        cfg = parse_step({"step": step, **fields}, 0)
        cfg.preflight(model, task)
        out = apply_step(model, cfg, ctx)
    except SlimformerError as e:
        assert expected is not None, f"{step} refused on {shape}: {e}"
        assert expected in str(e) and "\n" not in str(e)
        return
    assert expected is None, f"{step} ran on {shape} but should refuse ({expected})"
    after = out.state_dict()
    assert after.keys() != before.keys() or any(not torch.equal(after[k], v) for k, v in before.items()), \
        f"{step} on {shape} left the model unchanged"
    want = _outputs(out, batch, bare)
    assert torch.isfinite(want).all()
    sf.save(out, tokenizer, tmp_path / "m")
    reloaded, _ = sf.load(str(tmp_path / "m"))
    torch.testing.assert_close(_outputs(reloaded, batch, bare), want, atol=1e-5, rtol=0)


def _outputs(model, batch, bare: bool):
    if not bare:
        return logits(model, batch)
    with torch.no_grad():
        return last_hidden(model(**batch))


@pytest.mark.parametrize("shape", ["encoder-decoder", "decoder"])
def test_a_recipe_runs_end_to_end_on_a_generative_shape(shape, tokenizer, tmp_path):
    from slimformer.recipe import EvalSettings, compress

    model = tiny(SHAPES[shape])
    steps = [{"step": "prune_heads", "keep": 0.5, "importance_examples": 8, "batch_size": 4},
             {"step": "distill", "kd": 1, "ce": 0.5, "max_steps": 2, "batch_size": 4},
             {"step": "quantize_dynamic", "guard": True, "tolerance": 100.0}]
    ev = EvalSettings(max_examples=4, seq_len=8, batches=[1], latency_budget_s=0.05, max_len=16)
    res = compress(model, tokenizer, steps, tmp_path / "out", _task(shape), ev, seed=1)
    metric = "bleu" if shape == "encoder-decoder" else "perplexity"
    assert [r["step"] for r in res.rows] == ["input", "prune_heads", "distill", "quantize_dynamic"]
    assert all(metric in r["metrics"] for r in res.rows) and res.rows[1]["params"] < res.rows[0]["params"]
    reloaded, _ = sf.load(str(tmp_path / "out"))
    batch = inputs(reloaded, seq=8)
    torch.testing.assert_close(logits(reloaded, batch), logits(res.model, batch), atol=1e-5, rtol=0)
