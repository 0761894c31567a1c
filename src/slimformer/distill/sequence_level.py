"""Sequence-level knowledge distillation (Kim & Rush 2016): the student learns the teacher's beam-search outputs.

Word-level KD matches the teacher's next-token distribution under the gold prefix; sequence-level KD replaces
each training target by what the teacher itself translates (beam search), a simpler, more deterministic target
that small translation students fit better. The teacher's translations are cached in the step's work folder
(chunk by chunk, so an interrupted run resumes where it stopped) and reused by a rerun with the same sources.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..errors import check
from ..fsutil import write_json
from ..progress import console
from ..tasks.base import Task

CHUNK = 512


def _key(sources: Sequence[str], beams: int, max_len: int) -> str:
    h = hashlib.sha256(f"{beams}|{max_len}\n".encode())
    for s in sources:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def teacher_translations(teacher: nn.Module, tokenizer: Any, task: Task, sources: Sequence[str], cache: Path,
                         beams: int, max_len: int, batch_size: int = 32) -> list[str]:
    """The teacher's beam-search translation of every source, resumable through the JSON file `cache`."""
    key = _key(sources, beams, max_len)
    done: list[str] = []
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            done = list(saved["targets"])
    if done:
        console.print(f"sequence-level KD: {len(done)}/{len(sources)} teacher translations reused from {cache}")
    teacher.eval()
    while len(done) < len(sources):
        chunk = list(sources[len(done):len(done) + CHUNK])
        done += task.translate(teacher, tokenizer, chunk, max_len=max_len, beams=beams, batch_size=batch_size)
        write_json(cache, {"key": key, "beams": beams, "max_len": max_len, "targets": done})
    return done


def with_teacher_targets(task: Task, examples: Sequence[Any], teacher: nn.Module, tokenizer: Any, work_dir: Path,
                         beams: int | None, max_len: int) -> tuple[list[Any], dict[str, Any]]:
    """examples with their targets replaced by the teacher's translations, and a summary for the report (the task
    kind is checked before any work by `distill.step.fits`)."""
    check(hasattr(teacher, "generate"), "distill: targets: teacher needs a PyTorch encoder-decoder teacher")
    beams = beams or getattr(task, "beams", 5)
    sources = [e.text for e in examples]
    hyps = teacher_translations(teacher, tokenizer, task, sources, Path(work_dir) / "teacher_targets.json", beams,
                                max_len)
    empty = sum(1 for h in hyps if not h)
    kept = [dataclasses.replace(e, target=h) for e, h in zip(examples, hyps) if h]
    check(bool(kept), "distill: the teacher translated every training source to an empty string")
    same = sum(1 for e, h in zip(examples, hyps) if h == e.target)
    return kept, {"targets": "teacher", "beams": beams, "examples": len(kept), "dropped_empty": empty,
                  "identical_to_gold": round(same / len(examples), 4)}
