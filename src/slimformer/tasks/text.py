"""Raw text for task-agnostic (masked-LM) distillation: WikiText-style files cut into token blocks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import check


def read_text(path: str | Path) -> list[str]:
    """Non-empty lines of a .txt file, or of every .txt file in a directory (sorted); WikiText headings dropped."""
    p = Path(path).expanduser()
    check(p.exists(), f"text data not found: {p}")
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    check(bool(files), f"{p}: no .txt files")
    lines: list[str] = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s and not (s.startswith("=") and s.endswith("=")):  # " = Heading = " lines in WikiText
                lines.append(s)
    check(bool(lines), f"{p}: no text")
    return lines


def mlm_blocks(tokenizer: Any, lines: list[str], block_size: int = 128, max_blocks: int | None = None) -> Any:
    """Concatenate the tokenised lines and cut them into [CLS] ... [SEP] blocks of block_size tokens."""
    from ..data import EncodedDataset

    check(block_size >= 8, f"block_size must be >= 8, got {block_size}")
    body = block_size - 2
    ids: list[int] = []
    feats: list[dict[str, Any]] = []
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    for start in range(0, len(lines), 256):
        enc = tokenizer(lines[start:start + 256], add_special_tokens=False)["input_ids"]
        for row in enc:
            ids.extend(row)
        while len(ids) >= body:
            chunk, ids = ids[:body], ids[body:]
            block = [cls_id, *chunk, sep_id]
            feats.append({"input_ids": block, "attention_mask": [1] * len(block),
                          "token_type_ids": [0] * len(block)})
            if max_blocks and len(feats) >= max_blocks:
                return EncodedDataset(feats)
    check(bool(feats), f"not enough text for one block of {block_size} tokens")
    return EncodedDataset(feats)
