"""Run TextPruner's TransformerPruner (iterative) on the slimformer SST-2 teacher, in its own venv.

TextPruner needs transformers 4.x (it calls `prune_heads`), so this script runs in a separate venv:

    python3 -m venv ~/.cache/slimformer/peer-venv
    ~/.cache/slimformer/peer-venv/bin/pip install torch==2.13.0 'transformers<5' textpruner
    ~/.cache/slimformer/peer-venv/bin/python benchmarks/peers/textpruner_run.py TEACHER EXAMPLES.json OUT \
        --heads 6 --ffn 768 --iters 3

EXAMPLES.json holds {"texts": [...], "labels": [...], "probe": [...]} (the same importance examples
slimformer scores on). OUT receives model.safetensors (the pruned weights), kept.json (per-layer kept head
and FFN indices, in original numbering) and probe_logits.json (to check the reload in slimformer).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("teacher")
    ap.add_argument("examples")
    ap.add_argument("out")
    ap.add_argument("--heads", type=int, required=True, help="target average heads per layer")
    ap.add_argument("--ffn", type=int, required=True, help="target average FFN size per layer")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--even", action="store_true", help="same head count / FFN width in every layer")
    args = ap.parse_args()

    import textpruner
    from textpruner import GeneralConfig, TransformerPruner, TransformerPruningConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(args.examples).read_text())
    tok = AutoTokenizer.from_pretrained(args.teacher)
    model = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    enc = tok(data["texts"], truncation=True, max_length=args.max_len, padding=True, return_tensors="pt")
    labels = torch.tensor(data["labels"])
    batches = [{"input_ids": enc["input_ids"][s:s + args.batch_size],
                "attention_mask": enc["attention_mask"][s:s + args.batch_size],
                "token_type_ids": enc["token_type_ids"][s:s + args.batch_size],
                "labels": labels[s:s + args.batch_size]} for s in range(0, len(labels), args.batch_size)]
    n_layers = model.config.num_hidden_layers
    cfg = TransformerPruningConfig(target_ffn_size=args.ffn, target_num_of_heads=args.heads,
                                   pruning_method="iterative", n_iters=args.iters,
                                   head_even_masking=args.even, ffn_even_masking=args.even)
    pruner = TransformerPruner(model, transformer_pruning_config=cfg,
                               general_config=GeneralConfig(use_device="cpu", output_dir=str(out / "tp")))
    t0 = time.perf_counter()
    pruner.prune(dataloader=batches, save_model=False)
    seconds = time.perf_counter() - t0
    head_mask, ffn_mask = pruner.head_mask.bool(), pruner.ffn_mask.bool()
    kept = {"heads": {str(i): torch.nonzero(head_mask[i]).flatten().tolist() for i in range(n_layers)},
            "ffn": {str(i): torch.nonzero(ffn_mask[i]).flatten().tolist() for i in range(n_layers)},
            "prune_seconds": round(seconds, 2), "textpruner": textpruner.__version__,
            "config": {"target_num_of_heads": args.heads, "target_ffn_size": args.ffn, "n_iters": args.iters,
                       "even_masking": args.even, "importance_examples": len(labels), "max_len": args.max_len}}
    assert sum(map(len, kept["heads"].values())) == args.heads * n_layers
    (out / "kept.json").write_text(json.dumps(kept))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    model.eval()
    probe = tok(data["probe"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**probe).logits
    (out / "probe_logits.json").write_text(json.dumps(logits.tolist()))
    print(json.dumps({"heads_per_layer": [len(v) for v in kept["heads"].values()],
                      "ffn_per_layer": [len(v) for v in kept["ffn"].values()], "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
