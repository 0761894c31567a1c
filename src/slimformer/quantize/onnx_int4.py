"""4-bit weights on a real CPU kernel: the MatMuls of an exported ONNX graph become ONNX Runtime's `MatMulNBits`
(block-wise symmetric 4-bit weights, fp32 scales per block of `block_size` inputs). `accuracy_level` 4 lets
the kernel multiply in INT8 (activations quantized per block on the fly), the fast path on x86 with VNNI;
0 keeps fp32 arithmetic on dequantized weights. Embedding tables become 4-bit GatherBlockQuantized lookups
(`quantize_gathers_4bit`); a table whose codes are a MatMulNBits head's (a tied head quantized once) reads the
head's copy.

Also here: how many weight bytes one decode step reads, and this machine's memory read bandwidth, the bound on
batch-1 decoding (every weight is read once per token): tokens/s <= bandwidth / bytes read per token.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SlimformerError, check

OwnCodes = tuple[Any, Any, Any, int]  # (codes [rows, cols] uint8, scale [rows, blocks], zero [rows, blocks], block)


def quantize_matmuls_4bit(src: str | os.PathLike, dst: str | os.PathLike, block_size: int = 32,
                          accuracy_level: int = 4) -> dict[str, Any]:
    """Write `dst`: the graph of `src` with every MatMul by a constant weight as a 4-bit MatMulNBits node."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    check(block_size >= 16 and block_size & (block_size - 1) == 0,
          f"int4 block size must be a power of two >= 16, got {block_size}")
    check(accuracy_level in (0, 1, 2, 3, 4), f"accuracy level must be 0-4, got {accuracy_level}")
    model = onnx.load(str(src))
    folded = _fold_weight_transposes(model)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level)
    try:
        q.process()
    except Exception as e:
        raise SlimformerError(f"ONNX Runtime 4-bit quantization failed: {str(e).splitlines()[0][:200]}") from e
    out = q.model.model
    nodes = sum(n.op_type == "MatMulNBits" for n in out.graph.node)
    check(nodes > 0, "no MatMul with a constant weight was found to quantize")
    left = sum(n.op_type == "MatMul" and any(i.name == x for x in n.input for i in out.graph.initializer)
               for n in out.graph.node)
    onnx.save(out, str(dst))
    return {"matmulnbits_nodes": nodes, "fp32_weight_matmuls_left": left, "folded_transposes": folded,
            "block_size": block_size,
            "accuracy_level": accuracy_level, "bytes": Path(dst).stat().st_size}


def _fold_weight_transposes(model: Any) -> int:
    """Replace Transpose(initializer) nodes that feed MatMuls by a transposed initializer, so the quantizer sees
    a constant weight (a tied LM head is exported as a Transpose of the embedding table)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    folded = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "MatMul" or u.input[1] != node.output[0] for u in users):
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        weight = numpy_helper.to_array(inits[node.input[0]])
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.transpose(perm)),
                                                               node.output[0]))
        model.graph.node.remove(node)
        folded += 1
    return folded


def bytes_read_per_token(path: str | os.PathLike) -> int:
    """Weight bytes a decode step reads: every initializer, except tables only gathered from (one row each)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    used_by: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            used_by.setdefault(i, set()).add(n.op_type)
    total = 0
    for init in model.graph.initializer:
        if used_by.get(init.name) and used_by[init.name] <= {"Gather", "GatherBlockQuantized"}:
            continue
        total += numpy_helper.to_array(init).nbytes
    return total


def read_bandwidth(gib: float = 1.0, repeats: int = 5, threads: int | None = None) -> dict[str, float]:
    """Memory read bandwidth (GB/s, best and median of `repeats`) summing a `gib` GiB float32 array with torch
    on `threads` threads (more than any cache, so it streams from DRAM as batch-1 decoding does)."""
    import statistics

    import torch

    from ..bench import threads as use_threads

    a = torch.ones(int(gib * 2 ** 30 / 4), dtype=torch.float32)
    rates = []
    with use_threads(threads) as nt, torch.inference_mode():
        a.sum()
        for _ in range(repeats):
            t = time.perf_counter()
            a.sum()
            rates.append(a.numel() * 4 / (time.perf_counter() - t) / 1e9)
    del a
    return {"best_gb_s": round(max(rates), 2), "median_gb_s": round(statistics.median(rates), 2), "threads": nt}


def greedy_agreement(reference: np.ndarray, got: np.ndarray, prompt_len: int) -> float:
    """Share of generated positions where two greedy continuations agree, up to the first difference."""
    a, b = reference[:, prompt_len:], got[:, prompt_len:]
    n = min(a.shape[1], b.shape[1])
    same = (a[:, :n] == b[:, :n]).all(0)
    first = int(np.argmin(same)) if not same.all() else n
    return first / max(n, 1)


def quantize_gathers_4bit(path: str | os.PathLike, block_size: int | None = 32,
                          own: Callable[[np.ndarray], OwnCodes | None] | None = None) -> dict[str, Any]:
    """Rewrite `path` in place: every Gather from a 2-D fp32 table (the word embeddings; with a tied LM head the
    table the head's 4-bit copy came from) becomes ONNX Runtime's GatherBlockQuantized over 4-bit codes
    (asymmetric, one fp32 scale and a 4-bit zero point per block of `block_size` columns), so the file no
    longer holds the fp32 table. `own(table)` returns a table's own codes (codes, scale, zero, block) when the
    model has them (a 4-bit QEmbedding): those are carried as they are; with `block_size` None only those
    tables are rewritten. Tables whose width the block does not divide stay fp32."""
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from .modules import pack4, quantize_groups

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    users = input_users(model)
    done: dict[str, tuple[list[str], int]] = {}
    nodes, dropped, carried = [], set(), 0
    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        ok = table is not None and len(table.dims) == 2 and table.data_type == onnx.TensorProto.FLOAT and axis == 0
        if ok and table.name not in done:
            arr = numpy_helper.to_array(table)
            mine = own(arr) if own else None
            if mine is not None:
                codes, scale, zero, block = mine
                carried += 1
            elif block_size and table.dims[1] % block_size == 0:
                codes, scale, zero = quantize_groups(torch.from_numpy(arr.copy()), 4, block_size)
                block = block_size
            else:
                ok = False
            if ok:
                names = [f"{table.name}_q4", f"{table.name}_q4_scales", f"{table.name}_q4_zero_points"]
                model.graph.initializer.extend([
                    numpy_helper.from_array(pack4(codes).numpy(), names[0]),
                    numpy_helper.from_array(scale.float().numpy(), names[1]),
                    numpy_helper.from_array(pack_zero_points(zero.to(torch.uint8).numpy()), names[2])])
                done[table.name] = (names, block)
        if not ok or table.name not in done:
            nodes.append(node)
            continue
        (a, s, zp), block = done[table.name]
        nodes.append(helper.make_node("GatherBlockQuantized", [a, node.input[1], s, zp], list(node.output),
                                      name=f"{node.name or table.name}_Q4", domain="com.microsoft", gather_axis=0,
                                      quantize_axis=1, block_size=block, bits=4))
        users[table.name] -= 1
        if users[table.name] == 0:
            dropped.add(table.name)
    shared = _share_with_head(model, nodes, dropped)
    write_rewritten(model, nodes, dropped, path)
    return {"gather_tables": len(done), "own_code_tables": carried, "fp32_tables_dropped": len(dropped),
            "tables_sharing_head_codes": shared}


def _share_with_head(model: Any, nodes: list[Any], dropped: set[str]) -> int:
    """Where a GatherBlockQuantized table holds the very codes, scales and zero points of a MatMulNBits weight
    (a tied LM head quantized once, `lm_head: shared`), let the lookup read the head's tensors (its codes through
    a Reshape from [N, blocks, block/2] to [N, K/2]) and drop the table's copy. Returns the tables shared."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    arr = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None  # noqa: E731
    heads = [n for n in nodes if n.op_type == "MatMulNBits" and len(n.input) >= 4]
    shared, made = 0, set()
    for node in [n for n in nodes if n.op_type == "GatherBlockQuantized" and len(n.input) == 4]:
        data, scales, zero = (arr(node.input[i]) for i in (0, 2, 3))
        for head in heads:
            b_init = inits.get(head.input[1])
            if data is None or b_init is None or int(np.prod(b_init.dims)) != data.size:
                continue  # sizes first: converting every MatMulNBits weight to numpy would read the whole model
            b = arr(head.input[1])
            if (not np.array_equal(b.reshape(data.shape), data)
                    or not _same(arr(head.input[2]), scales) or not _same(arr(head.input[3]), zero)):
                continue
            shape = f"{node.input[0]}_shape"
            if shape not in made:  # one Reshape per table, however many lookups read it
                model.graph.initializer.append(numpy_helper.from_array(np.array(data.shape, np.int64), shape))
                nodes.insert(nodes.index(node), helper.make_node("Reshape", [head.input[1], shape], [f"{shape}d"],
                                                                 name=f"{shape}_codes"))
                made.add(shape)
                shared += 1
            dropped.update(node.input[i] for i in (0, 2, 3))
            node.input[:] = [f"{shape}d", node.input[1], head.input[2], head.input[3]]
            break
    return shared


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.size == b.size and np.array_equal(a.reshape(b.shape), b)


def pack_zero_points(zero: np.ndarray) -> np.ndarray:
    """4-bit zero points [rows, blocks] (values 0-15) two per byte along the blocks, low nibble first, padded to
    an even count: the layout of MatMulNBits and GatherBlockQuantized."""
    z = np.pad(zero.astype(np.uint8), ((0, 0), (0, zero.shape[1] % 2)))
    return np.ascontiguousarray(z[:, 0::2] | (z[:, 1::2] << 4))


def input_users(model: Any) -> dict[str, int]:
    """How many node inputs read each tensor name of the graph."""
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    return users


def write_rewritten(model: Any, nodes: list[Any], dropped: set[str], path: str | os.PathLike) -> None:
    """Save `model` at `path` with `nodes` as its graph, the initializers in `dropped` removed, and the
    com.microsoft opset declared when a node uses it."""
    import onnx
    from onnx import helper

    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [i for i in model.graph.initializer if i.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    ms = any(n.domain == "com.microsoft" for n in nodes)
    if ms and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
