"""Helpers for the quantization tests: a toy task labelled by a reference model, fresh-process reload."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from slimformer.tasks import Example, TaskData

SRC = str(Path(__file__).resolve().parents[1] / "src")  # the fresh process loads the source under test
WORDS = "a fine film well acted dull and far too long to sit through ok great bad plot music actors story".split()


def toy_task(model=None, tokenizer=None, n_train: int = 48, n_dev: int = 40, seed: int = 0) -> TaskData:
    """Random short sentences; dev labels are the reference model's predictions (so it scores 100%)."""
    g = torch.Generator().manual_seed(seed)

    def sent() -> str:
        k = int(torch.randint(3, 9, (1,), generator=g))
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g))

    train = [Example(sent(), int(torch.randint(0, 2, (1,), generator=g))) for _ in range(n_train)]
    dev_text = [sent() for _ in range(n_dev)]
    labels = [0] * n_dev
    if model is not None:
        enc = tokenizer(dev_text, padding=True, return_tensors="pt")
        with torch.no_grad():
            labels = model(**enc).logits.argmax(-1).tolist()
    dev = [Example(t, lab) for t, lab in zip(dev_text, labels)]
    return TaskData("toy", ["neg", "pos"], {"train": train, "dev": dev})


RELOAD = """
import json, sys, torch
import slimformer
model, tok = slimformer.load(sys.argv[1])
enc = tok(json.loads(sys.argv[2]), padding=True, return_tensors="pt")
with torch.no_grad():
    print(json.dumps(model(**dict(enc)).logits.tolist()))
"""


def fresh_logits(path: str | Path, texts: list[str]) -> torch.Tensor:
    """Logits of the model saved at path, loaded in a fresh Python process (importing the slimformer under
    test, not whichever one the venv has installed)."""
    out = subprocess.run([sys.executable, "-c", RELOAD, str(path), json.dumps(texts)], capture_output=True,
                         text=True, check=True, env={"SLIMFORMER_QUIET": "1", "HF_HUB_OFFLINE": "1",
                                                     "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                     "PYTHONPATH": SRC})
    return torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
