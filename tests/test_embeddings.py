"""Sentence embeddings: distillation on unlabelled sentences, embedding-aware pruning, deployable outputs,
vocabulary pruning, and one-line errors for bad inputs."""
from __future__ import annotations

import copy

import pytest
import torch

import slimformer as sf
from slimformer.errors import SlimformerError
from slimformer.tasks.similarity import embed

WORDS = ("the a cat dog sat ran on under mat park near old tree river small big red blue man woman child "
         "plays sings reads walks house car road city").split()
SENTENCES = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 6)) for i in range(48)]


def tiny_encoder(layers: int = 2, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=160, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tf.BertModel(cfg).eval()


def mse_to(teacher, student, tokenizer, texts=SENTENCES):
    return float(torch.nn.functional.mse_loss(embed(student, tokenizer, texts, 32),
                                              embed(teacher, tokenizer, texts, 32)))


def test_distill_embeddings_lowers_the_mse(tokenizer, tmp_path):
    teacher = tiny_encoder(layers=2)
    student = sf.make_student(teacher, layers=[0])
    before = mse_to(teacher, student, tokenizer)
    cfg = sf.DistillEmbeddings(epochs=8, batch_size=8, lr=1e-3, mse=1.0, cos=0.0)
    student, stats = sf.distill_embeddings(student, teacher, tokenizer, SENTENCES, cfg, tmp_path / "w", max_len=32)
    after = mse_to(teacher, student, tokenizer)
    assert after < 0.5 * before, (before, after)
    assert stats["sentences"] == len(SENTENCES)


def sts_task(n: int = 24):
    from slimformer.tasks import Example
    from slimformer.tasks.similarity import SimilarityTask

    exs = [Example(SENTENCES[i], float(i % 6), SENTENCES[(i + 5) % len(SENTENCES)]) for i in range(n)]
    return SimilarityTask("toy-sts", {"train": exs, "dev": exs[:12]}, mode="embedding")


def test_pca_projection_preserves_cosines_of_the_teacher():
    from slimformer.distill.projection import pca_directions

    g = torch.Generator().manual_seed(0)
    e = torch.randn(200, 4, generator=g) @ torch.randn(4, 12, generator=g)  # rank 4 in 12 dimensions
    w = pca_directions(e, 4)
    p = e @ w.T
    torch.testing.assert_close(p @ p.T, e @ e.T, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("kind", ["heads", "ffn"])
def test_embedding_importance_ranks_units_by_how_far_their_removal_moves_the_embeddings(kind, tokenizer):
    from scipy.stats import spearmanr

    from slimformer.prune.embedding_importance import (_embedding, embedding_importance, reference_embeddings,
                                                       sentence_batches)
    from slimformer.prune.gates import gated, ones_gates

    model = tiny_encoder(layers=2, seed=3)
    batches = sentence_batches(tokenizer, SENTENCES, 32, 16)
    ref = reference_embeddings(model, batches)
    scores = embedding_importance(model, batches, ref, kind)
    est, real = [], []
    for unit, s in scores.items():
        for j in range(s.numel())[:8]:
            gates = ones_gates(model, kind)
            gates[unit][j] = 0.0
            with torch.no_grad(), gated(model, **({"heads": gates} if kind == "heads" else {"neurons": gates})):
                real.append(sum(0.5 * float((_embedding(model, b) - r).pow(2).sum()) for b, r in zip(batches, ref)))
            est.append(float(s[j]))
    assert spearmanr(est, real)[0] > 0.7, (est, real)


def test_prune_with_the_embedding_criterion_needs_no_labels(tokenizer, tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("\n".join(SENTENCES))
    model = tiny_encoder()
    cfg = sf.PruneFFN(keep=0.5, criterion="embedding", texts=[str(text)], batch_size=8)
    assert not cfg.needs_data
    model, info = sf.prune_ffn(model, cfg, tokenizer, None, max_len=32)
    assert info["kept_total"] == info["original_total"] // 2
    with pytest.raises(SlimformerError, match="task head"):
        sf.PruneHeads(keep=0.5, criterion="embedding").preflight(make_classifier(), None)


def make_classifier():
    import transformers as tf

    return tf.BertForSequenceClassification(tiny_encoder().config).eval()


def pruned_projected_encoder(tokenizer):
    """A tiny sentence encoder with uneven heads and FFN widths per layer and a 16-dimension projection."""
    from slimformer.distill.projection import add_projection
    from slimformer.prune.ffn import keep_ffn
    from slimformer.prune.heads import keep_heads

    model = tiny_encoder(layers=2, seed=1)
    keep_heads(model, {0: [0, 2], 1: [1, 2, 3]})
    keep_ffn(model, {0: [1, 5, 9, 20], 1: list(range(30))})
    return add_projection(model, torch.nn.init.orthogonal_(torch.empty(16, 32)))


def test_sentence_transformers_folder_gives_the_models_embeddings(tokenizer, tmp_path):
    from slimformer.export_embeddings import PROBE_TEXTS, folder_embeddings, write_sentence_transformers

    model = pruned_projected_encoder(tokenizer)
    res = write_sentence_transformers(model, tokenizer, tmp_path / "st")
    assert res["min_cosine"] > 0.9999 and res["notes"]
    import json

    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    want = embed(model, tokenizer, PROBE_TEXTS, 128, normalize=True)
    got = folder_embeddings(tmp_path / "st", PROBE_TEXTS, 128)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.9999
    st = pytest.importorskip("sentence_transformers")
    enc = st.SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(PROBE_TEXTS, convert_to_tensor=True)
    assert enc.shape == (len(PROBE_TEXTS), 16)
    assert torch.nn.functional.cosine_similarity(enc.float(), want).min() > 0.9999


@pytest.mark.parametrize("int8", [False, True])
def test_onnx_with_pooling_inside_gives_the_models_embeddings(tokenizer, tmp_path, int8):
    from slimformer.deploy import export_onnx
    from slimformer.export_embeddings import PROBE_TEXTS, onnx_embeddings
    from slimformer.steps import Context, apply_step

    model = pruned_projected_encoder(tokenizer)
    if int8:
        ctx = Context(tokenizer=tokenizer, task=None, work_dir=tmp_path / "w")
        model = apply_step(model, sf.QuantizeDynamic(backend="onnxruntime", guard=False), ctx)
    info = export_onnx(model, tokenizer, tmp_path / "m.onnx", optimize=True, embedding=True)
    assert info["min_cosine"] > 0.9999
    got = onnx_embeddings(tmp_path / "m.onnx", tokenizer, PROBE_TEXTS + SENTENCES[:7])
    want = embed(model, tokenizer, PROBE_TEXTS + SENTENCES[:7], 128, normalize=True)
    assert got.shape == want.shape == (12, 16)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.9999
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(12), atol=1e-5, rtol=0)


def test_prune_vocab_keeps_corpus_text_exact_and_splits_unseen_words(tokenizer, tmp_path):
    model = tiny_encoder()
    before = embed(model, tokenizer, SENTENCES, 32)
    pruned, tok, info = sf.prune_vocab(copy.deepcopy(model), tokenizer, SENTENCES, sf.PruneVocab())
    assert len(tok) == info["kept_tokens"] < 3000 and pruned.config.vocab_size == len(tok)
    assert pruned.get_input_embeddings().weight.shape[0] == len(tok)
    torch.testing.assert_close(embed(pruned, tok, SENTENCES, 32), before, atol=1e-6, rtol=0)
    for s in SENTENCES[:5]:  # the same pieces as before, under new ids
        assert tok.tokenize(s) == tokenizer.tokenize(s)
    pieces = tok.tokenize("zebras xylophone")  # never seen: split into kept single characters, not [UNK]
    assert "[UNK]" not in pieces and "".join(p.removeprefix("##") for p in pieces) == "zebrasxylophone"
    sf.save(pruned, tok, tmp_path / "m")
    again, tok2 = sf.load(str(tmp_path / "m"))
    assert tok2.tokenize("zebras xylophone") == pieces
    torch.testing.assert_close(embed(again, tok2, SENTENCES, 32), before, atol=1e-6, rtol=0)


def test_recipe_prunes_on_embeddings_shrinks_the_vocab_distills_to_a_projection_and_reloads(tokenizer, tmp_path):
    from slimformer.recipe import EvalSettings, compress

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(SENTENCES))
    steps = [{"step": "prune_heads", "keep": 0.5, "criterion": "embedding", "texts": [str(text)]},
             {"step": "prune_vocab", "texts": [str(text)]},
             {"step": "distill_embeddings", "max_steps": 2, "batch_size": 8, "dim": 16}]
    ev = EvalSettings(max_examples=8, seq_len=8, batches=[1], latency_budget_s=0.05, max_len=32)
    res = compress(tiny_encoder(), tokenizer, steps, tmp_path / "out", sts_task(), ev, seed=1)
    assert [r["step"] for r in res.rows] == ["input", "prune_heads", "prune_vocab", "distill_embeddings"]
    assert all("spearman" in r["metrics"] for r in res.rows)
    reloaded, tok = sf.load(str(tmp_path / "out"))
    assert len(tok) == reloaded.config.vocab_size < 3000
    assert embed(reloaded, tok, SENTENCES[:6], 32).shape == (6, 16)
    torch.testing.assert_close(embed(reloaded, tok, SENTENCES[:6], 32), embed(res.model, tok, SENTENCES[:6], 32),
                               atol=1e-5, rtol=0)
    from slimformer.export_embeddings import write_sentence_transformers

    assert write_sentence_transformers(reloaded, tok, tmp_path / "st")["min_cosine"] > 0.9999


def test_sentence_throughput_encodes_the_corpus_with_every_candidate(tokenizer, tmp_path):
    from slimformer.deploy import export_onnx
    from slimformer.throughput import encoder, length_batches, onnx_encoder, sentence_throughput

    model = tiny_encoder()
    export_onnx(model, tokenizer, tmp_path / "m.onnx", embedding=True)
    batches = length_batches(SENTENCES, 16)
    assert [len(b) for b in batches] == [16, 16, 16] and len(batches[0][0]) >= len(batches[-1][-1])
    torch.testing.assert_close(onnx_encoder(str(tmp_path / "m.onnx"), tokenizer)(SENTENCES[:4]),
                               encoder(model, tokenizer)(SENTENCES[:4]), atol=1e-5, rtol=0)
    res = sentence_throughput(lambda: {"torch": encoder(model, tokenizer),
                                       "onnx": onnx_encoder(str(tmp_path / "m.onnx"), tokenizer)},
                              SENTENCES, batch=16, n_threads=1, rounds=2, tokenizer=tokenizer)
    for r in res.values():
        assert r.sentences == len(SENTENCES) and r.passes == 2 and r.sentences_per_s > 0 and r.threads == 1
        assert r.mean_tokens > 4


def test_predictor_runs_a_classifier_at_real_lengths(tiny_bert, tokenizer):
    """Dynamic padding does not change a sentence's logits: batched equals one by one."""
    from slimformer.throughput import predictor

    model = tiny_bert().eval()
    run = predictor(model, tokenizer)
    batched = run(SENTENCES[:6]).logits
    alone = torch.cat([run([s]).logits for s in SENTENCES[:6]])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, content, fragment", [
    ("empty.txt", "\n\n", "no text"),
    ("t.csv", "id,score\n1,2\n", "no text column among"),
    ("t.jsonl", '{"sentence": "a"}\n', "no text column 'body'"),
    ("sts.csv", "g\tf\t2012\t1\tfive\tA cat.\tA dog.\n", "not a number"),
    ("missing.txt", None, "not found"),
])
def test_bad_sentence_sources_get_one_line(tmp_path, name, content, fragment):
    from slimformer.tasks.sentences import read_sentences

    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(SlimformerError) as e:
        read_sentences([p], column="body" if name == "t.jsonl" else None)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_embedding_inputs_are_one_line_errors(tmp_path, tokenizer, capsys):
    from cli_helpers import invoke

    sf.save(tiny_encoder(), tokenizer, tmp_path / "enc")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "r.yaml").write_text(f"eval: {{seq_len: 8, batches: [1]}}\nsteps:\n"
                                     f"  - {{step: distill_embeddings, texts: [{tmp_path / 'empty.txt'}]}}\n")
    code, err = invoke(capsys, "compress", tmp_path / "enc", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o")
    assert code == 1 and err.count("\n") == 1 and "no text" in err
    data = tmp_path / "sts"
    data.mkdir()
    (data / "train.jsonl").write_text('{"sentence1": "a", "sentence2": "b"}\n')
    code, err = invoke(capsys, "evaluate", tmp_path / "enc", "--task", "similarity", "--data", data)
    assert code == 1 and err.count("\n") == 1 and "score column" in err
    (data / "train.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": "high"}\n')
    code, err = invoke(capsys, "evaluate", tmp_path / "enc", "--task", "similarity", "--data", data)
    assert code == 1 and err.count("\n") == 1 and "not a number" in err
    code, err = invoke(capsys, "export", tmp_path / "enc", "--sentence-transformers", tmp_path / "st", "--embedding")
    assert code == 2
    code, _ = invoke(capsys, "export", tmp_path / "enc", "--sentence-transformers", tmp_path / "st")
    assert code == 0 and (tmp_path / "st" / "modules.json").is_file()
    code, _ = invoke(capsys, "export", tmp_path / "enc", "--onnx", tmp_path / "e.onnx", "--embedding")
    assert code == 0 and (tmp_path / "e-tokenizer").is_dir()
    clf = tmp_path / "clf"
    sf.save(make_classifier(), tokenizer, clf)
    code, err = invoke(capsys, "export", clf, "--sentence-transformers", tmp_path / "st")
    assert code == 1 and err.count("\n") == 1 and "task head" in err


def test_a_distillation_teacher_reads_the_pruned_students_ids_in_its_own_vocabulary(tokenizer, tmp_path,
                                                                                     monkeypatch):
    """After prune_vocab the student's ids mean other tokens to the teacher: inside a distill step the teacher
    must still see its own ids (checked on its logits), and only there."""
    import slimformer as sf
    from slimformer.prune.vocab import teacher_reads_student_ids
    from slimformer.recipe import compress

    from conftest import make_tiny_bert, write_tiny_sst2

    teacher = make_tiny_bert(layers=2)
    _, tok, _ = sf.prune_vocab(copy.deepcopy(teacher), tokenizer, SENTENCES, sf.PruneVocab())
    text = SENTENCES[:2]
    want = teacher(**tokenizer(text, padding=True, return_tensors="pt")).logits
    enc = tok(text, padding=True, return_tensors="pt")
    with teacher_reads_student_ids(teacher, tok, tokenizer):
        torch.testing.assert_close(teacher(**enc).logits, want, atol=1e-6, rtol=0)
    assert not torch.allclose(teacher(**enc).logits, want, atol=1e-3)  # the hook is gone after the block
    seen = {}

    def fake_distill(model, t, student_tok, *args, **kwargs):  # what the step's teacher sees
        seen["logits"] = t(**student_tok(text, padding=True, return_tensors="pt")).logits
        return model, {}

    import importlib

    monkeypatch.setattr(importlib.import_module("slimformer.distill.step"), "distill", fake_distill)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    from slimformer.recipe import EvalSettings

    compress(teacher, tokenizer, [{"step": "prune_vocab", "texts": [str(corpus)]}, {"step": "distill"}],
             tmp_path / "out", write_tiny_sst2(tmp_path, 16),
             EvalSettings(batches=[1], latency_budget_s=0.05, each_step=False, max_len=32, seq_len=16))
    torch.testing.assert_close(seen["logits"], want, atol=1e-6, rtol=0)
