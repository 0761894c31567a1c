"""The four task kinds: loaders (and their one-line refusals), metrics equal to direct computations, heads."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import slimformer as sf
from families import tiny
from slimformer import tasks
from slimformer.errors import SlimformerError
from slimformer.tasks.language_modeling import LanguageModelingTask, Text, perplexity
from slimformer.tasks.similarity import mean_pool
from slimformer.tasks.translation import bleu_chrf


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# --- loaders ------------------------------------------------------------------------------------------------
def test_stsb_files_and_generic_pair_tables(tmp_path):
    d = tmp_path / "sts"
    d.mkdir()
    (d / "sts-train.csv").write_text("g\tf\t2012\t1\t4.5\tA man runs.\tA man is running.\n"
                                     "g\tf\t2012\t2\t0.5\tA cat.\tThe stock fell \"sharply\".\tlic\tlic\n")
    (d / "sts-dev.csv").write_text("g\tf\t2012\t3\t3.0\tTwo dogs.\tA pair of dogs.\n")
    t = tasks.load("stsb", d)
    assert t.kind == "similarity" and t.mode == "embedding" and t.head == "AutoModel"
    assert [ex.label for ex in t.split("train")] == [4.5, 0.5] and t.split("train")[1].text_pair.endswith('".')
    j = tmp_path / "j"
    j.mkdir()
    (j / "train.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n')
    (j / "dev.jsonl").write_text('{"sentence1": "c", "sentence2": "d", "score": 0.25}\n')
    r = tasks.load("similarity", j, mode="regression")
    assert r.head == "AutoModelForSequenceClassification" and r.model_kwargs()["num_labels"] == 1


@pytest.mark.parametrize("rows, fragment", [
    ('{"sentence1": "a", "sentence2": "b", "score": "high"}\n', "not a number"),
    ('{"sentence1": "a", "sentence2": "b"}\n', "score column"),
    ('{"sentence1": "a", "score": 1}\n', "score column"),
    ('{"sentence1": "", "sentence2": "b", "score": 1}\n', "two non-empty texts"),
    ('{"sentence1": "a", "sentence2": "b", "score": NaN}\n', "not finite"),
])
def test_similarity_loader_refuses_bad_rows(tmp_path, rows, fragment):
    (tmp_path / "train.jsonl").write_text(rows)
    with pytest.raises(SlimformerError) as e:
        tasks.load("similarity", tmp_path)
    assert fragment in _one_line(e)


def test_translation_files_tables_and_refusals(tmp_path):
    (tmp_path / "train.en").write_text("a dog\nthe cat\n")
    (tmp_path / "train.de").write_text("ein Hund\ndie Katze\n")
    (tmp_path / "val.en").write_text("a bird\n")
    (tmp_path / "val.de").write_text("ein Vogel\n")
    t = tasks.load("translation", tmp_path, src="en", tgt="de")
    assert set(t.splits) == {"train", "dev"} and t.split("dev")[0].target == "ein Vogel"
    back = tasks.load("translation", tmp_path, src="de", tgt="en")
    assert back.split("train")[0].text == "ein Hund"
    (tmp_path / "train.de").write_text("ein Hund\n")
    with pytest.raises(SlimformerError) as e:
        tasks.load("translation", tmp_path, src="en", tgt="de")
    assert "not parallel" in _one_line(e)
    with pytest.raises(SlimformerError) as e:
        tasks.load("translation", tmp_path, src="en", tgt="fr")
    assert "no files for languages" in _one_line(e)
    tsv = tmp_path / "pairs"
    tsv.mkdir()
    (tsv / "train.jsonl").write_text('{"translation": {"en": "hi", "de": "hallo"}}\n')
    assert tasks.load("translation", tsv, src="en", tgt="de").split("train")[0].target == "hallo"
    (tsv / "train.jsonl").write_text('{"en": "hi", "de": ""}\n')
    with pytest.raises(SlimformerError) as e:
        tasks.load("translation", tsv, src="en", tgt="de")
    assert "non-empty" in _one_line(e)


def test_text_loader_and_refusals(tmp_path):
    (tmp_path / "valid.txt").write_text(" = Title = \n\n some text here .\n")
    (tmp_path / "test.txt").write_text("more text .\n")
    t = tasks.load("lm", tmp_path)
    assert t.kind == "language_modeling" and t.default_split == "test" and set(t.splits) == {"dev", "test", "train"}
    (tmp_path / "captions.en").write_text("a dog runs .\n\na cat sits .\n")  # one named file: any suffix
    one = tasks.load("lm", tmp_path / "captions.en")
    assert [x.text for x in one.split("test")] == ["a dog runs .", "a cat sits ."] == [x.text for x in one.split("train")]
    (tmp_path / "test.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(SlimformerError) as e:
        tasks.load("lm", tmp_path)
    assert "not UTF-8" in _one_line(e)
    with pytest.raises(SlimformerError) as e:
        tasks.load("lm", tmp_path / "missing")
    assert "not found" in _one_line(e)


def test_eval_split_never_falls_back_silently(tmp_path):
    t = LanguageModelingTask("t", {"train": [Text("a")], "test": [Text("b")]})
    assert t.eval_split("test") == "test"
    with pytest.raises(SlimformerError, match="no split 'dev'"):
        t.eval_split("dev")


# --- metrics equal direct computations ------------------------------------------------------------------
def test_perplexity_equals_a_direct_computation(tokenizer):
    model = tiny("llama")
    ids = tokenizer("the cat sat on the mat and looked at the dog for a while , then slept .")["input_ids"] * 3
    ids = [i % 30522 for i in ids]
    # every token after the first scored once with full history: one window covers the stream
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    nll = F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
    direct = math.exp(float(nll) / (len(ids) - 1))
    assert perplexity(model, ids, context=64, stride=64) == pytest.approx(direct, rel=1e-5)
    # with a sliding window, tokens are still scored exactly once
    short = perplexity(model, ids, context=16, stride=8)
    assert short > 0 and math.isfinite(short)
    # eval.max_examples: the first N documents of the split
    docs = [Text("the cat sat on the mat ."), Text("a dog ran in the park ."), Text("it rained all day .")]
    task = LanguageModelingTask("t", {"train": docs, "test": docs}, context=64, stride=64)
    first = perplexity(model, tokenizer("the cat sat on the mat .")["input_ids"], context=64, stride=64)
    assert task.evaluate(model, tokenizer, "test", max_examples=1)["perplexity"] == pytest.approx(first, rel=1e-6)


def test_embedding_evaluation_equals_a_direct_computation(tokenizer):
    from scipy.stats import spearmanr

    from slimformer.tasks import Example, SimilarityTask

    model = tiny("bert").bert
    pairs = [Example("a fine film", 4.0, "a good movie"), Example("the sky", 0.5, "my dog barks loud"),
             Example("red car", 3.0, "a red automobile"), Example("rain", 1.0, "sunshine at noon")]
    task = SimilarityTask("t", {"dev": pairs})
    got = task.evaluate(model, tokenizer, "dev")
    cos = []
    for p in pairs:
        emb = []
        for text in (p.text, p.text_pair):
            enc = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                emb.append(mean_pool(model(**enc), enc["attention_mask"])[0])
        cos.append(float(F.cosine_similarity(emb[0], emb[1], dim=0)))
    assert got["spearman"] == pytest.approx(spearmanr([p.label for p in pairs], cos)[0], abs=1e-6)


def test_bleu_is_sacrebleu_on_detokenized_text():
    perfect = bleu_chrf(["Ein Hund läuft im Park."], ["Ein Hund läuft im Park."])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert bleu_chrf(["Eine Katze."], ["Ein Hund läuft im Park."])["bleu"] < 20


def test_task_picks_the_head_and_checks_labels(tmp_path, tokenizer):
    sf.save(tiny("bert"), tokenizer, tmp_path / "m")  # a 3-label classifier
    rows = [tasks.Example("good", 0), tasks.Example("bad", 1)]
    two = tasks.TaskData("two", ["neg", "pos"], {"train": rows, "dev": rows})
    with pytest.raises(SlimformerError) as e:
        sf.load(str(tmp_path / "m"), task=two)
    assert "3 output labels but task two has 2" in _one_line(e)
    emb, _ = sf.load(str(tmp_path / "m"), task=tasks.SimilarityTask("s", {"dev": []}))
    assert type(emb).__name__ == "BertModel"  # the task's head, not the checkpoint's
