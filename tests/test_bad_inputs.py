"""Bad models, recipes and data: each is one `error:` line and exit code 1, before any work starts."""
from __future__ import annotations

import json
import time

import pytest
from safetensors.torch import load_file, save_file


from cli_helpers import invoke, one_error


@pytest.fixture
def tiny(cli_inputs):
    return cli_inputs


def _copy_model(tiny, tmp_path, name="m"):
    import shutil

    dst = tmp_path / name
    shutil.copytree(tiny / "model", dst)
    return dst


def _config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


# --- models -----------------------------------------------------------------------------------------------
def test_missing_tensors(tiny, tmp_path, capsys):
    m = _copy_model(tiny, tmp_path)
    w = load_file(m / "model.safetensors")
    w.pop(next(k for k in w if "encoder.layer.1.attention" in k))
    save_file(w, m / "model.safetensors", metadata={"format": "pt"})
    code, err = invoke(capsys, "evaluate", m, "--task", "sst2", "--data", tiny / "data")
    assert code == 1 and "lacks 1 tensor(s)" in one_error(err, "encoder.layer.1.attention")


def test_no_tokenizer_files(tiny, tmp_path, capsys):
    m = _copy_model(tiny, tmp_path)
    for f in m.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            f.unlink()
    code, err = invoke(capsys, "profile", m)
    assert code == 1 and one_error(err, "no tokenizer files")


def test_pickle_only_checkpoint(tiny, tmp_path, capsys):
    m = _copy_model(tiny, tmp_path)
    (m / "model.safetensors").rename(m / "pytorch_model.bin")
    code, err = invoke(capsys, "profile", m)
    assert code == 1 and one_error(err, "pickle checkpoints are not loaded")


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.update(architectures=["NoSuchModelForAnything"]), "unknown architecture"),
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "names architecture GPT2LMHeadModel"),
    (lambda c: c.update(model_type="albert"), "not supported"),
    (lambda c: c.update(slimformer={"ops": "drop everything"}), "must be a list"),
    (lambda c: c.update(slimformer={"ops": [{"op": "keep_layers", "args": {"keep": [7]}}]}),
     "keep_layers) does not apply"),
    (lambda c: c.update(slimformer={"ops": [{"op": "keep_heads", "args": {"wrong": 1}}]}), "does not apply"),
    (lambda c: c.update(slimformer={"ops": [{"op": "no_such_op"}]}), "does not know"),
])
def test_bad_config(tiny, tmp_path, capsys, edit, fragment):
    m = _copy_model(tiny, tmp_path)
    _config(m, edit)
    code, err = invoke(capsys, "profile", m, "--seq-len", "8", "--runs", "1")
    assert code == 1 and one_error(err, fragment)


def test_config_nested_thousands_deep(tiny, tmp_path, capsys):
    m = _copy_model(tiny, tmp_path)
    text = (m / "config.json").read_text().rstrip().rstrip("}") + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}"
    (m / "config.json").write_text(text)
    code, err = invoke(capsys, "profile", m)
    assert code == 1 and one_error(err, "cannot read the model config")


def test_label_count_mismatch(tiny, tmp_path, capsys):
    data = tmp_path / "three"
    data.mkdir()
    (data / "train.csv").write_text("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(12)))
    code, err = invoke(capsys, "evaluate", tiny / "model", "--task", "classification", "--data", data)
    assert code == 1 and one_error(err, "2 output labels but task classification has 3")


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "--max-len", "5000"], "max-len 5000 exceeds the 160 positions"),
    (["evaluate", "--seq-len", "600"], "seq-len 600 exceeds"),
    (["evaluate", "--split", "nosuch"], "no split 'nosuch'"),
])
def test_lengths_and_splits(tiny, capsys, args, fragment):
    code, err = invoke(capsys, args[0], tiny / "model", "--task", "sst2", "--data", tiny / "data", *args[1:])
    assert code == 1 and one_error(err, fragment)


def test_profile_on_a_compressed_classifier_works(tiny, capsys):
    code, err = invoke(capsys, "profile", tiny / "model", "--seq-len", "8", "--runs", "1")
    assert code == 0, err


# --- recipes ----------------------------------------------------------------------------------------------
RECIPES = {
    "step: [a, b]": ("steps:\n  - step: [a, b]\n", "unknown step"),
    "step mapping": ("steps:\n  - step: {x: 1}\n", "unknown step"),
    "batches [0]": ("eval: {batches: [0]}\nsteps: [{step: drop_layers, keep: 1}]\n", "batches"),
    "negative batch": ("eval: {batches: [-4]}\nsteps: [{step: drop_layers, keep: 1}]\n", "batches"),
    "seq_len": ("eval: {seq_len: 1000}\nsteps: [{step: drop_layers, keep: 1}]\n", "eval.seq_len 1000 exceeds"),
    "epochs inf": ("steps: [{step: finetune, epochs: .inf}]\n", "finite"),
    "bad regex": ("steps: [{step: quantize_dynamic, include: ['(']}]\n", "not a valid regex"),
    "quantize first": ("steps: [{step: quantize_dynamic}, {step: prune_heads, keep: 0.5}]\n",
                       "must be the last step"),
    "split": ("eval: {split: nosuch}\nsteps: [{step: drop_layers, keep: 1}]\n", "no split 'nosuch'"),
    "layer index": ("steps: [{step: drop_layers, drop: [9]}]\n", "unknown layer index 9"),
    "huge student": ("steps: [{step: make_student, fresh: {hidden_size: 1200000}}]\n", "GiB in fp32"),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_bad_recipe(tiny, tmp_path, capsys, name):
    text, fragment = RECIPES[name]
    (tmp_path / "r.yaml").write_text(text)
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o",
                       "--task", "sst2", "--data", tiny / "data")
    assert code == 1 and one_error(err, fragment)
    assert not (tmp_path / "o").exists()


def test_recipe_data_path_that_does_not_exist(tiny, tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("task: sst2\ndata: /no/such/dir\nsteps: [{step: drop_layers, keep: 1}]\n")
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o")
    assert code == 1 and one_error(err, "not found")


def test_distill_teacher_that_is_a_pickle(tiny, tmp_path, capsys):
    t = _copy_model(tiny, tmp_path, "teacher")
    (t / "model.safetensors").rename(t / "pytorch_model.bin")
    (tmp_path / "r.yaml").write_text(f"steps: [{{step: distill, teacher: '{t}', max_steps: 1}}]\n")
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o",
                       "--task", "sst2", "--data", tiny / "data")
    assert code == 1 and one_error(err, "pickle checkpoints are not loaded")


def test_latin1_and_binary_recipes(tiny, tmp_path, capsys):
    for content in ("steps: [{step: drop_layers, keep: 1}]  # caf\xe9\n".encode("latin-1"), bytes(range(256))):
        (tmp_path / "r.yaml").write_bytes(content)
        code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tmp_path / "r.yaml", "--out",
                           tmp_path / "o", "--task", "sst2", "--data", tiny / "data")
        assert code == 1 and one_error(err, "not UTF-8")


def test_yaml_alias_bomb_is_refused_at_once(tiny, tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                      for p, c in zip("abcdefgh", "bcdefghi")]
    (tmp_path / "r.yaml").write_text("\n".join(lines) + "\nsteps: [*i]\n")
    t0 = time.perf_counter()
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "o")
    assert code == 1 and one_error(err, "aliases") and time.perf_counter() - t0 < 5


# --- data -------------------------------------------------------------------------------------------------
def test_binary_and_latin1_data(tiny, tmp_path, capsys):
    for content in ("0 caf\xe9 film\n".encode("latin-1"), bytes(range(256))):
        d = tmp_path / "bad"
        d.mkdir(exist_ok=True)
        for split in ("train", "dev", "test"):
            (d / f"stsa.binary.{split}").write_bytes(content)
        code, err = invoke(capsys, "evaluate", tiny / "model", "--task", "sst2", "--data", d)
        assert code == 1 and one_error(err, "UTF-8")


def test_deeply_nested_jsonl_line(tiny, tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": ' + "[" * 100000 + "]" * 100000 + "}\n")
    code, err = invoke(capsys, "evaluate", tiny / "model", "--task", "classification", "--data",
                       tmp_path / "train.jsonl")
    assert code == 1 and one_error(err, "")


def test_a_one_megabyte_text_field_is_truncated_not_fatal(tiny, tmp_path, capsys):
    rows = [f"short text {i},{i % 2}" for i in range(10)] + ["x " * 500000 + ",1"]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    code, err = invoke(capsys, "evaluate", tiny / "model", "--task", "classification", "--data", tmp_path,
                       "--seq-len", "8", "--max-len", "32")
    assert code == 0, err
