"""`slimformer export` writes every kind of model compress writes (FP32, pruned, torch INT8, ONNX Runtime
INT8) as one ONNX file that ONNX Runtime runs like the model; failures leave no stub and no temporary file."""
from __future__ import annotations

import copy

import pytest
import torch

from slimformer import models
from slimformer.export import OnnxModel
from slimformer.outputs import read_marker
from slimformer.quantize import QuantizeDynamic, quantize_dynamic

from helpers import TEXTS, logits
from cli_helpers import invoke, one_error, snapshot


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tokenizer):
    """Tiny models of each kind, saved as compress would save them."""
    from conftest import make_tiny_bert
    from slimformer.prune.heads import keep_heads

    root = tmp_path_factory.mktemp("zoo")
    base = make_tiny_bert(hidden=64, ffn=128)
    pruned = keep_heads(copy.deepcopy(base), {0: [1, 3], 1: [0, 1, 2]})
    kinds = {"pruned": pruned,
             "torch_int8": quantize_dynamic(copy.deepcopy(base), QuantizeDynamic(backend="torch")),
             "ort_int8": quantize_dynamic(copy.deepcopy(base), QuantizeDynamic(backend="onnxruntime"), tokenizer)}
    for name, m in kinds.items():
        models.save(m, tokenizer, root / name)
    return root


def _ort_logits(path, tokenizer):
    return OnnxModel(path)(dict(tokenizer(TEXTS, padding=True, return_tensors="pt")))


@pytest.mark.parametrize("kind,optimize,atol", [("pruned", False, 1e-4), ("ort_int8", False, 1e-6),
                                                ("ort_int8", True, 1e-6), ("torch_int8", False, 0.1)])
def test_export_any_compress_output(zoo, tmp_path, capsys, tokenizer, kind, optimize, atol):
    onnx = tmp_path / "deploy" / "m.onnx"
    code, err = invoke(capsys, "export", zoo / kind, "--onnx", onnx, *(["--optimize"] if optimize else []))
    assert code == 0 and "Traceback" not in err, err
    model, tok = models.load(str(zoo / kind))
    want = logits(model, tok)
    torch.testing.assert_close(_ort_logits(onnx, tokenizer), want, atol=atol * want.abs().max().item() + 1e-6,
                               rtol=0)
    if kind == "ort_int8":
        assert onnx.read_bytes() == model.ort.onnx_bytes.numpy().tobytes()  # the stored graph, as is
    assert read_marker(tmp_path / "deploy" / "m-tokenizer")["onnx"] == "m.onnx"
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["m-tokenizer", "m.onnx"]  # no stub


def test_export_failures_leave_nothing_behind(zoo, tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, err = invoke(capsys, "export", zoo / "pruned", "--onnx", tmp_path / "taken")
    assert code == 1 and err.strip().count("\n") == 0
    one_error(err, "is a directory, not a file")

    import slimformer.export as export

    def broken(*a, **k):
        raise RuntimeError("Failed to export. This is step 1/3. Next steps:\n- do this\n\n## Exception summary\n\n"
                           "<class 'torch.SomeError'>: the cause\n")

    monkeypatch.setattr(export.torch.onnx, "export", broken)
    code, err = invoke(capsys, "export", zoo / "pruned", "--onnx", tmp_path / "m.onnx", "--optimize")
    assert code == 1
    one_error(err, "ONNX export failed: SomeError: the cause")
    assert snapshot(tmp_path) == before  # no stub .onnx, no temporary file, no tokenizer folder


def test_export_replaces_its_own_earlier_file_only(zoo, tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    assert invoke(capsys, "export", zoo / "ort_int8", "--onnx", onnx)[0] == 0
    assert invoke(capsys, "export", zoo / "ort_int8", "--onnx", onnx)[0] == 0  # an earlier export
    onnx.write_bytes(b"the user's own file now")
    code, err = invoke(capsys, "export", zoo / "ort_int8", "--onnx", onnx)
    assert code == 1 and "exists: pass --overwrite" in err and onnx.read_bytes() == b"the user's own file now"
    assert invoke(capsys, "export", zoo / "ort_int8", "--onnx", onnx, "--overwrite")[0] == 0
