"""Issue "Language models", the held-out check: the main rows of bench_llm.py (4-bit weight-only, W8A8, one-shot
50% pruning, depth pruning) scored in one run on WikiText-2 test AND on a second text that is neither
WikiText-2 nor calibration data: the English captions of Multi30k's three test sets (Elliott et al. 2016,
"Multi30K: Multilingual English-German Image Descriptions", ../shared/data/multi30k), short image descriptions,
far from Wikipedia prose. Calibration stays WikiText-2 valid (the same 59 blocks as bench_llm.py), so a method
that fits its calibration domain rather than the model shows up as a larger ratio on the captions.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_heldout.py heldout
    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_heldout.py calib_size

`calib_size`: SparseGPT and Wanda at 50% calibrated on 4x the text (1,024 lines of WikiText-2 valid against
the 256 of every other row; 18 minutes per method here), scored on both texts: is the gap to the papers'
OPT-125M ratios a matter of calibration size?
    python benchmarks/bench_llm_heldout.py markdown
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any, Callable

import bench_llm
import common

RESULT = "llm_heldout"
CAPTIONS = ("test_2016_flickr.en", "test_2017_flickr.en", "test_2017_mscoco.en")


def _captions(tok: Any) -> list[int]:
    """The captions as one token stream (one caption per document, as the WikiText stream joins documents),
    cut to the token budget of the WikiText-2 figures."""
    from slimformer.tasks.language_modeling import load_text

    ids: list[int] = []
    for name in CAPTIONS:
        ids += load_text(common.DATA / "multi30k" / name).stream(tok, "test")
    return ids[: bench_llm.EVAL_TOKENS]


def _variants(tok: Any, batches: list, group: int = 32) -> dict[str, Callable[[Any], Any]]:
    from slimformer.prune.layers import block_influence, keep_layers, most_influential
    from slimformer.prune.oneshot import PruneOneShot, prune_oneshot
    from slimformer.quantize import QuantizeDynamic, QuantizeWeights, quantize_dynamic, quantize_weights

    def weights(method: str, **kw: Any) -> Callable[[Any], Any]:
        return lambda m: quantize_weights(m, QuantizeWeights(bits=4, group_size=group, method=method, guard=False,
                                                             **kw), batches)

    def pruned(method: str) -> Callable[[Any], Any]:
        def run(m: Any) -> Any:
            prune_oneshot(m, PruneOneShot(method=method, sparsity=0.5), batches)
            return m
        return run

    def depth(m: Any, drop: int = 6) -> Any:
        bi = block_influence(m, batches)
        return keep_layers(m, most_influential(bi, len(bi) - drop))

    return {
        "base (dequantized Q4_1)": lambda m: m,
        f"rtn 4-bit g{group}": weights("rtn"),
        f"gptq 4-bit g{group} act-order mse, layer by layer, head shared (lm_head: shared)": weights(
            "gptq", act_order=True, grid="mse", sequential=True, lm_head="shared"),
        "smoothquant 0.5 + int8 dynamic (per-token)": lambda m: quantize_dynamic(
            m, QuantizeDynamic(backend="torch", smoothquant=0.5, activations="token", guard=False), tok, batches),
        "sparsegpt 50%": pruned("sparsegpt"),
        "wanda 50%": pruned("wanda"),
        "depth: 6 of 30 layers dropped by block influence": depth,
    }


def _measured(name: str, make: Callable[[Any], Any], base: Any, task: Any, texts: dict[str, list[int]],
              **extra: Any) -> dict[str, Any]:
    """Make one variant from a copy of base and score it on every text (perplexity, the task's context and
    stride); the row is printed and returned."""
    from slimformer.tasks.language_modeling import perplexity

    t0 = time.perf_counter()
    model = make(copy.deepcopy(base))
    row = {"variant": name, **extra, "make_s": round(time.perf_counter() - t0, 1),
           "tensor_mb": bench_llm._tensor_mb(model)}
    for text, ids in texts.items():
        row[text] = round(perplexity(model, ids, task.context, task.stride), 3)
    print(json.dumps(row))
    return row


def _texts(tok: Any, task: Any) -> dict[str, list[int]]:
    return {"wikitext2": task.stream(tok, "test")[: bench_llm.EVAL_TOKENS], "captions": _captions(tok)}


def heldout() -> dict[str, Any]:
    base, tok, task, batches = bench_llm._setup()
    texts = _texts(tok, task)
    rows = [_measured(name, make, base, task, texts) for name, make in _variants(tok, batches).items()]
    return {"rows": rows, "tokens": {k: len(v) for k, v in texts.items()}, "context": task.context,
            "stride": task.stride, "captions_files": list(CAPTIONS), "calib_blocks": len(batches)}


def calib_size(lines: tuple[int, ...] = (1024,)) -> dict[str, Any]:
    """One-shot 50% pruning with more calibration text (same seed; `lines` of WikiText-2 valid, cut into blocks
    of bench_llm.CALIB_LEN tokens), each model scored on WikiText-2 test and the captions."""
    from slimformer.quantize.guard import calibration_batches

    base, tok, task, _ = bench_llm._setup()
    texts = _texts(tok, task)
    rows = []
    for n in lines:
        batches = calibration_batches(tok, task, n, bench_llm.CALIB_LEN, batch_size=8, seed=0, split="dev",
                                      model=base)
        calib = {"calib_lines": n, "calib_blocks": sum(int(b["input_ids"].shape[0]) for b in batches),
                 "calib_tokens": sum(int(b["input_ids"].numel()) for b in batches)}
        makers = _variants(tok, batches)
        rows += [_measured(name, makers[name], base, task, texts, **calib) for name in ("sparsegpt 50%", "wanda 50%")]
    return {"rows": rows, "context": task.context, "stride": task.stride}


def main(parts: list[str]) -> None:
    bench_llm.run_parts(RESULT, PARTS, parts, markdown)


def markdown() -> str:
    full = json.loads((common.RESULTS / f"{RESULT}.json").read_text())
    r = full["heldout"]
    base = r["rows"][0]
    out = [f"Context {r['context']}, stride {r['stride']}; WikiText-2 test: first {r['tokens']['wikitext2']} tokens; "
           f"captions: first {r['tokens']['captions']} tokens of {', '.join(r['captions_files'])}.", "",
           "| variant | tensors MB | WikiText-2 ppl | x base | captions ppl | x base | seconds to make |",
           "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['variant']} | {row['tensor_mb']} | {row['wikitext2']} | "
                   f"{row['wikitext2'] / base['wikitext2']:.2f} | {row['captions']} | "
                   f"{row['captions'] / base['captions']:.2f} | {row['make_s']} |")
    if "calib_size" in full:
        out += ["", "More calibration text (same seed, same scoring):", "",
                "| variant | calibration lines / blocks / tokens | WikiText-2 ppl | x base | captions ppl | x base |",
                "|---|---|---|---|---|---|"]
        for row in full["calib_size"]["rows"]:
            out.append(f"| {row['variant']} | {row['calib_lines']} / {row['calib_blocks']} / {row['calib_tokens']} | "
                       f"{row['wikitext2']} | {row['wikitext2'] / base['wikitext2']:.2f} | {row['captions']} | "
                       f"{row['captions'] / base['captions']:.2f} |")
    return "\n".join(out)


PARTS = {"heldout": heldout, "calib_size": calib_size}

if __name__ == "__main__":
    common.parts_cli("bench_llm_heldout.py", PARTS, main, markdown)
