"""A sparse on-disk format for pruned models, and a measurement of whether a sparse kernel pays on this CPU.

    save_sparse(model, tokenizer, "student-sparse/")     # config + tokenizer + model.sparse.safetensors
    model, tok = load_sparse("student-sparse/")          # bit-identical weights

`model.sparse.safetensors` holds exactly the tensors `slimformer.save` writes (same names), each 2-D float
tensor whose encoding is smaller stored as `<name>.values` (its nonzeros, row-major) + `<name>.bitmask` (one bit
per element, numpy packbits order) + `<name>.shape` (see `unstructured.sparse_encode`). Loading decodes it to a
dense `model.safetensors` in a temporary folder and loads that with `slimformer.load`, so structural ops are
replayed as usual. This saves disk and download bytes only: in memory the model is dense again.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import check

SPARSE_FILE = "model.sparse.safetensors"
FORMAT = "slimformer-sparse-bitmask-v1"


def encode(tensors: dict[str, torch.Tensor], names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Bitmask-encode the 2-D floating tensors (all, or those in names) where that is smaller; others as is."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        nz = t != 0
        sparse_bytes = int(nz.sum()) * t.element_size() + (t.numel() + 7) // 8
        if (t.dim() == 2 and t.is_floating_point() and (names is None or name in names)
                and sparse_bytes < t.numel() * t.element_size()):
            out[f"{name}.values"] = t[nz].clone()
            out[f"{name}.bitmask"] = torch.from_numpy(np.packbits(nz.flatten().numpy()))
            out[f"{name}.shape"] = torch.tensor(list(t.shape), dtype=torch.int64)
        else:
            out[name] = t.clone()
    return out


def decode(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dense tensors back from encode's output (exact)."""
    out = {}
    for key, t in tensors.items():
        if key.endswith(".values"):
            name = key[: -len(".values")]
            shape = tensors[f"{name}.shape"].tolist()
            n = int(np.prod(shape))
            nz = torch.from_numpy(np.unpackbits(tensors[f"{name}.bitmask"].numpy(), count=n).astype(bool))
            dense = torch.zeros(n, dtype=t.dtype)
            dense[nz] = t
            out[name] = dense.view(shape)
        elif not key.endswith((".bitmask", ".shape")):
            out[key] = t
    return out


def save_sparse(model: nn.Module, tokenizer: Any, out: str | Path) -> Path:
    """Write model like `slimformer.save`, with the weights in the sparse format (atomically)."""
    from safetensors.torch import load_file, save_file

    from ..fsutil import atomic_dir
    from ..models import save

    out = Path(out)
    with atomic_dir(out) as tmp:
        dense_dir = tmp / "dense"
        save(model, tokenizer, dense_dir)
        tensors = load_file(str(dense_dir / "model.safetensors"))
        save_file(encode(tensors), str(tmp / SPARSE_FILE), metadata={"format": FORMAT})
        for f in dense_dir.iterdir():
            if f.name != "model.safetensors" and not f.name.startswith(".slimformer"):
                shutil.move(str(f), str(tmp / f.name))
        shutil.rmtree(dense_dir)
    return out


def load_sparse(path: str | Path) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a save_sparse folder, with exactly the saved weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..models import load

    path = Path(path)
    check((path / SPARSE_FILE).is_file(), f"{path}: no {SPARSE_FILE} (not written by save_sparse)")
    with safe_open(str(path / SPARSE_FILE), "pt") as f:
        fmt = (f.metadata() or {}).get("format")
    check(fmt == FORMAT, f"{path / SPARSE_FILE}: unknown sparse format {fmt!r} (expected {FORMAT})")
    with tempfile.TemporaryDirectory(prefix="slimformer-sparse-") as d:
        for f in path.iterdir():
            if f.name != SPARSE_FILE and f.is_file():
                (Path(d) / f.name).symlink_to(f.resolve())
        save_file(decode(load_file(str(path / SPARSE_FILE))), str(Path(d) / "model.safetensors"),
                  metadata={"format": "pt"})
        return load(d)


def kernel_curve(out_features: int = 1536, in_features: int = 384, rows: int = 4096, threads: int | None = None,
                 sparsities: list[float] | None = None, budget_s: float = 4.0, seed: int = 0) -> list[dict[str, Any]]:
    """Time y = x W^T with a dense weight (torch.nn.functional.linear) against torch's CSR sparse matmul on the
    same zeros (random unstructured, at each sparsity), interleaved with the shared measurement; one row per
    sparsity with both medians and the dense/sparse ratio (> 1: the sparse kernel is faster)."""
    from ..bench import compare_latency

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=g)
    xt = x.t().contiguous()
    out = []
    for s in sparsities or [0.5, 0.9, 0.99]:
        w = torch.randn(out_features, in_features, generator=g)
        w[torch.rand(w.shape, generator=g) < s] = 0.0
        csr = w.to_sparse_csr()
        with torch.inference_mode():
            torch.testing.assert_close(torch.sparse.mm(csr, xt).t(), torch.nn.functional.linear(x, w),
                                       atol=1e-3, rtol=1e-4)

        def dense(_: Any, w: torch.Tensor = w) -> torch.Tensor:
            with torch.inference_mode():
                return torch.nn.functional.linear(x, w)

        def sparse(_: Any, csr: torch.Tensor = csr) -> torch.Tensor:
            with torch.inference_mode():
                return torch.sparse.mm(csr, xt)

        lat = compare_latency({"dense": dense, "csr": sparse}, None, 1, 8, threads, budget_s=budget_s)
        out.append({"sparsity": s, "shape": [out_features, in_features], "rows": rows,
                    "dense_ms": round(lat["dense"].median_ms, 3), "csr_ms": round(lat["csr"].median_ms, 3),
                    "dense_over_csr": round(lat["dense"].median_ms / lat["csr"].median_ms, 2),
                    "reliable": lat["dense"].reliable and lat["csr"].reliable,
                    "warning": lat["dense"].warning or lat["csr"].warning})
    return out
