"""Loaders for every supported data format, label handling and bad-data errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimformer import tasks
from slimformer.errors import SlimformerError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def test_sst2_lines(tmp_path):
    for split in ("train", "dev", "test"):
        _write(tmp_path / f"stsa.binary.{split}", "1 a fine , funny film\n0 dull\n\n")
    td = tasks.load("sst2", tmp_path)
    assert td.labels == ["0", "1"] and td.metrics == ["accuracy"]
    assert td.split("train")[0].text == "a fine , funny film" and td.split("train")[0].label == 1
    assert not td.is_pair


def test_cola_tsv_dev_is_both_devs(tmp_path):
    row = "gj04\t1\t\tThe sailors rode the breeze.\nclc95\t0\t*\tHim went home.\n"
    for f in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        _write(tmp_path / f, row)
    td = tasks.load("cola", tmp_path)
    assert len(td.split("dev")) == 4 and td.main_metric == "mcc"
    assert [e.label for e in td.split("train")] == [1, 0]


def test_mrpc_bom_and_unescaped_quotes(tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = '1\t1\t2\tHe said "the witness, of course\t"The witness" he said.\n0\t3\t4\tA b.\tC d.\n'
    for f in ("glue_train.tsv", "glue_dev.tsv", "msr_paraphrase_test.txt"):
        _write(tmp_path / f, header + rows, bom=True)
    td = tasks.load("mrpc", tmp_path)
    ex = td.split("train")[0]
    assert ex.text == 'He said "the witness, of course' and ex.text_pair == '"The witness" he said.'
    assert td.is_pair and td.metrics == ["accuracy", "f1"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_generic_tables(tmp_path, fmt):
    rows = [("great stuff", "pos"), ("awful", "neg"), ("fine, I guess", "pos")]
    for split in ("train", "validation"):
        if fmt == "jsonl":
            text = "\n".join(json.dumps({"review": t, "stars": lab}) for t, lab in rows)
        elif fmt == "csv":
            text = "review,stars\n" + "\n".join(f'"{t}",{lab}' for t, lab in rows)
        else:
            text = "review\tstars\n" + "\n".join(f"{t}\t{lab}" for t, lab in rows)
        _write(tmp_path / f"{split}.{fmt}", text + "\n")
    td = tasks.load("classification", tmp_path, text_col="review", label_col="stars")
    assert td.labels == ["neg", "pos"] and set(td.splits) == {"train", "dev"}
    assert td.split("dev")[2].text == "fine, I guess" and td.split("dev")[1].label == 0


def test_generic_guesses_columns_and_carves_dev(tmp_path):
    f = _write(tmp_path / "all.csv", "sentence1,sentence2,label\n" + "\n".join(f"a{i},b{i},{i % 3}" for i in range(30)))
    td = tasks.load("classification", f)
    assert td.is_pair and len(td.split("dev")) == 3 and len(td.split("train")) == 27
    assert td.labels == ["0", "1", "2"]


def test_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["good", "bad", "meh"], "label": [1, 0, 1]}),
        "validation": datasets.Dataset.from_dict({"sentence": ["nice"], "label": [1]}),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    td = tasks.load("classification", tmp_path / "ds")
    assert len(td.split("train")) == 3 and td.split("dev")[0].text == "nice"


@pytest.mark.parametrize("case,pattern", [
    ("missing", "not found"),
    ("wrong_columns", "cannot tell the text and label columns"),
    ("named_missing", "no text column 'body'"),
    ("unknown_label", "outside the label set"),
    ("empty", "no rows"),
    ("bad_json", "not a JSON object"),
    ("unknown_task", "unknown task"),
])
def test_bad_data_is_one_clear_error(tmp_path, case, pattern):
    opts = {}
    if case == "missing":
        target = tmp_path / "nope.csv"
    elif case == "wrong_columns":
        target = _write(tmp_path / "d" / "train.csv", "foo,bar\n1,2\n")
    elif case == "named_missing":
        target = _write(tmp_path / "d" / "train.csv", "text,label\nx,1\ny,0\n")
        opts = {"text_col": "body"}
    elif case == "unknown_label":
        _write(tmp_path / "d" / "train.csv", "text,label\nx,1\ny,0\n")
        target = _write(tmp_path / "d" / "dev.csv", "text,label\nz,7\n").parent
    elif case == "empty":
        target = _write(tmp_path / "d" / "train.csv", "text,label\n")
    elif case == "bad_json":
        target = _write(tmp_path / "d" / "train.jsonl", '{"text": "a", "label": 1}\nnot json\n')
    else:
        with pytest.raises(SlimformerError, match=pattern):
            tasks.load("sst3", tmp_path)
        return
    with pytest.raises(SlimformerError, match=pattern) as e:
        tasks.load("classification", target, **opts)
    assert "\n" not in str(e.value)


def test_empty_split_is_an_error(tmp_path):
    _write(tmp_path / "stsa.binary.train", "1 good\n")
    _write(tmp_path / "stsa.binary.dev", "\n")
    _write(tmp_path / "stsa.binary.test", "0 bad\n")
    with pytest.raises(SlimformerError, match="split 'dev' is empty"):
        tasks.load("sst2", tmp_path)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_shared_benchmark_counts():
    assert {k: len(v) for k, v in tasks.load("sst2", SHARED / "sst2").splits.items()} == \
        {"train": 6920, "dev": 872, "test": 1821}
    assert len(tasks.load("cola", SHARED / "cola").split("dev")) == 1043
    mrpc = tasks.load("mrpc", SHARED / "mrpc")
    assert (len(mrpc.split("train")), len(mrpc.split("dev")), len(mrpc.split("test"))) == (3668, 408, 1725)
