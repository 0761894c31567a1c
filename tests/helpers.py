"""Test helpers: run a reload in a fresh Python process and compare logits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

RELOAD = """
import json, sys, torch
import slimformer
model, tok = slimformer.load(sys.argv[1])
enc = tok(json.loads(sys.argv[2]), padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**dict(enc))
print(json.dumps((out.logits if hasattr(out, "logits") else out).tolist()))
"""
TEXTS = ["a fine film , well acted", "dull and far too long to sit through", "ok"]


def fresh_process_logits(model_dir: str | Path, texts: list[str] = TEXTS) -> torch.Tensor:
    """Logits of the model in model_dir, loaded by slimformer in a new Python process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    res = subprocess.run([sys.executable, "-c", RELOAD, str(model_dir), json.dumps(texts)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))


def logits(model: torch.nn.Module, tokenizer, texts: list[str] = TEXTS) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**dict(enc))
    return out.logits if hasattr(out, "logits") else out
