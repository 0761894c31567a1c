"""No command loses a user's file: every pre-existing file stays byte-identical (by hash) when an output path
is refused, and the refusal is one `error:` line with exit code 1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_refused, cli, invoke, snapshot
from slimformer import models
from slimformer.errors import SlimformerError
from slimformer.outputs import MARKER, check_output, read_marker


@pytest.fixture(scope="module")
def proj(tmp_path_factory, tokenizer):
    """A user's project: a fine-tuned model, a recipe, SST-2 data and files of their own."""
    from conftest import make_tiny_bert

    root = tmp_path_factory.mktemp("proj")
    models.save(make_tiny_bert(), tokenizer, root / "model")
    (root / "important.csv").write_text("id,value\n1,42\n")
    (root / "sub").mkdir()
    (root / "sub" / "x.txt").write_text("notes\n")
    (root / "r.yaml").write_text("steps:\n  - {step: drop_layers, keep: 1}\n")
    (root / "data").mkdir()
    for split in ("train", "dev", "test"):
        (root / "data" / f"stsa.binary.{split}").write_text("1 good film\n0 bad film\n")
    return root


def test_compress_and_finetune_never_replace_a_folder_holding_the_input(proj):
    before = snapshot(proj)
    assert_refused(cli("compress", proj / "model", "--recipe", proj / "r.yaml", "--out", proj), "contains the input")
    assert_refused(cli("compress", proj / "model", "--recipe", proj / "r.yaml", "--out", proj, "--overwrite"),
                   "contains the input")
    assert_refused(cli("finetune", proj / "model", "--task", "sst2", "--data", proj / "data", "--out", proj),
                   "contains the input")
    assert_refused(cli("compress", "model", "--recipe", "r.yaml", "--out", ".", "--overwrite", cwd=proj),
                   "contains the input")
    assert_refused(cli("compress", proj / "model", "--recipe", proj / "r.yaml", "--out", proj / "model"),
                   "must differ from the input")
    assert_refused(cli("compress", proj / "model", "--recipe", proj / "r.yaml", "--out", proj / "model" / "x"),
                   "inside the input")
    assert_refused(cli("compress", proj / "model", "--recipe", proj / "r.yaml", "--out", proj / "data" / ".."),
                   "contains the input")
    assert snapshot(proj) == before


def test_existing_user_paths_are_refused(proj, tmp_path):
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "important.csv").write_text("a,b\n1,2\n")
    (user / "sub" / "x.txt").write_text("x\n")
    (tmp_path / "file.txt").write_text("mine\n")
    (tmp_path / "link").symlink_to(user, target_is_directory=True)
    before, proj_before = snapshot(tmp_path), snapshot(proj)
    comp = ["compress", proj / "model", "--recipe", proj / "r.yaml", "--out"]
    assert_refused(cli(*comp, user), "not a slimformer output: pass --overwrite")
    assert_refused(cli(*comp, tmp_path / "file.txt"), "is a file, not a directory")
    assert_refused(cli(*comp, tmp_path / "file.txt", "--overwrite"), "is a file, not a directory")
    assert_refused(cli(*comp, tmp_path / "link"), "symbolic link")
    assert_refused(cli(*comp, tmp_path / "link", "--overwrite"), "symbolic link")
    assert_refused(cli(*comp, tmp_path / "file.txt" / "out"), "is a file, not a directory")
    assert_refused(cli("finetune", proj / "model", "--task", "sst2", "--data", proj / "data", "--out", user),
                   "not a slimformer output")
    assert_refused(cli("export", proj / "model", "--onnx", tmp_path / "file.txt"), "exists: pass --overwrite")
    assert_refused(cli("export", proj / "model", "--onnx", user), "is a directory, not a file")
    assert_refused(cli("export", proj / "model", "--onnx", proj / "model" / "m.onnx"), "inside the input")
    assert_refused(cli("report", proj, proj, "--out", user), "not a slimformer output")
    assert_refused(cli("demo", "--out", user, "--data-root", proj / "data"), "not a slimformer output")
    assert_refused(cli("evaluate", proj / "model", "--task", "sst2", "--data", proj / "data", "--json", user),
                   "is a directory")
    assert snapshot(tmp_path) == before and snapshot(proj) == proj_before


def test_atomic_dir_guards_the_python_api(tmp_path, tiny_bert, tokenizer):
    user = tmp_path / "user"
    user.mkdir()
    (user / "important.csv").write_text("1\n")
    before = snapshot(tmp_path)
    with pytest.raises(SlimformerError, match="not a slimformer output"):
        models.save(tiny_bert(), tokenizer, user)
    assert snapshot(tmp_path) == before  # no temporary directory left either
    out = tmp_path / "m"
    models.save(tiny_bert(), tokenizer, out)
    assert read_marker(out)["kind"] == "model" and "model.safetensors" in read_marker(out)["files"]
    models.save(tiny_bert(seed=1), tokenizer, out)  # an earlier slimformer output may be replaced
    (out / "my-notes.txt").write_text("mine\n")
    with pytest.raises(SlimformerError, match=r"holds files slimformer did not write \(my-notes.txt\)"):
        models.save(tiny_bert(), tokenizer, out)
    assert (out / "my-notes.txt").read_text() == "mine\n"
    check_output(user, overwrite=True)  # the CLI's --overwrite approves this path for atomic_dir
    models.save(tiny_bert(), tokenizer, user)
    assert not (user / "important.csv").exists() and (user / MARKER).is_file()


def test_check_output_keeps_cwd_home_and_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in (tmp_path, tmp_path.parent, Path("/")):
        with pytest.raises(SlimformerError, match="refusing to replace it"):
            check_output(path, overwrite=True)
    assert check_output(tmp_path / "new") == tmp_path / "new"


def test_rerun_on_an_earlier_output_and_overwrite(proj, tmp_path, capsys):
    """compress may replace its own earlier output; --overwrite replaces a user folder; nothing else moves."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("eval: {seq_len: 8, batches: [1], latency_budget_s: 0.02}\n"
                      "steps:\n  - {step: drop_layers, keep: 1}\n")
    out = tmp_path / "student"
    user = tmp_path / "user"
    user.mkdir()
    (user / "old.txt").write_text("replace me\n")
    proj_before = snapshot(proj)
    assert invoke(capsys, "compress", proj / "model", "--recipe", recipe, "--out", out, "--threads", "1")[0] == 0
    assert read_marker(out)["kind"] == "compress"
    assert invoke(capsys, "compress", proj / "model", "--recipe", recipe, "--out", out)[0] == 0
    assert invoke(capsys, "compress", proj / "model", "--recipe", recipe, "--out", user, "--overwrite")[0] == 0
    assert not (user / "old.txt").exists() and (user / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "student", "user"]  # no work or temp dirs
    assert snapshot(proj) == proj_before
    assert json.loads((out / "summary.json").read_text())["task"] is None
