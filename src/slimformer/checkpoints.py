"""Trainer checkpoints that are never seen half-written, and a resume that skips a broken one.

The HF Trainer writes `checkpoint-N/` in place, so an interruption while it writes leaves a folder that
looks like a checkpoint and fails on every resume. `AtomicCheckpoints`, mixed into every slimformer Trainer
(`atomic_trainer`), writes it into `.partial/checkpoint-N/` beside, syncs it to disk and renames it into
place only when complete. `last_checkpoint` returns the newest checkpoint that is whole (the trainer state
parses, the weights open as safetensors, the optimizer, scheduler and RNG archives are intact): a broken
one is moved aside to `broken-checkpoint-N` (same folder, never deleted) with a warning.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .errors import one_line

STAGING = ".partial"  # not matched by the Trainer's `checkpoint-*` globs
BROKEN = "broken-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class AtomicCheckpoints:
    """HF Trainer mixin: `checkpoint-N/` appears (by a rename) only once every file in it is written."""

    _sf_staging: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        return self._sf_staging or super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial))
        staging = run_dir / STAGING
        name = f"checkpoint-{self.state.global_step}"  # type: ignore[attr-defined]
        main = self.args.should_save  # type: ignore[attr-defined]
        if main:
            shutil.rmtree(staging, ignore_errors=True)  # what an earlier interrupted save left
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]
        self._sf_staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._sf_staging = None
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]  (every rank wrote its RNG state)
        if main:
            publish(staging / name, run_dir / name)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(str(run_dir), self.args.save_total_limit,  # type: ignore[attr-defined]
                               self.state.best_model_checkpoint, use_mtime=True)  # type: ignore[attr-defined]
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]


def atomic_trainer(cls: Any) -> Any:
    """`cls` with AtomicCheckpoints mixed in (itself when it already has it)."""
    if issubclass(cls, AtomicCheckpoints):
        return cls
    return type(cls.__name__, (AtomicCheckpoints, cls), {"__module__": cls.__module__})


def publish(src: Path, dst: Path) -> None:
    """Sync every file of the finished folder src to disk, then rename it to dst (replacing an older dst)."""
    for f in src.rglob("*"):
        if f.is_file():
            _fsync(f)
    _fsync(src)
    if dst.exists():  # rename cannot replace a non-empty folder: move the old one out of sight first
        old = src.parent / f"old-{dst.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    _fsync(dst.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder cannot be resumed from (None: it is whole)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        int(state["global_step"])
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"trainer_state.json unreadable ({one_line(e)})"
    problem = _weights_problem(path)
    if problem:
        return problem
    for name in ("optimizer.pt", "scheduler.pt"):
        problem = _archive_problem(path / name)
        if problem:
            return problem
    rng = sorted(path.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state.pth"
    return next(filter(None, map(_archive_problem, rng)), None)


def _weights_problem(path: Path) -> str | None:
    index = path / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() \
            else ["model.safetensors"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{index.name} unreadable ({one_line(e)})"
    from safetensors import safe_open

    for name in files:
        if not (path / name).is_file():
            return f"no {name}"
        try:
            with safe_open(str(path / name), "pt") as f:  # checks the header against the file's length
                f.keys()
        except Exception as e:  # SafetensorError, OSError: a truncated or garbled file
            return f"{name} unreadable ({one_line(e)})"
    return None


def _archive_problem(path: Path) -> str | None:
    """torch.save writes a zip archive; a truncated or garbled one fails its central directory or CRCs."""
    if not path.is_file():
        return f"no {path.name}"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        return f"{path.name} unreadable ({one_line(e)})"
    return f"{path.name} corrupt ({bad})" if bad else None


def checkpoints(run_dir: Path) -> list[Path]:
    """The `checkpoint-N` folders in run_dir, newest (highest N) first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def last_checkpoint(run_dir: str | os.PathLike, move_broken: bool = True) -> str | None:
    """The newest whole checkpoint in run_dir; broken newer ones are reported and (move_broken) moved aside."""
    from .progress import console

    for path in checkpoints(Path(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if move_broken:
            aside = _aside(path)
            os.replace(path, aside)
            console.print(f"[yellow]warning: skipping the incomplete checkpoint {path} ({problem}); moved it "
                          f"to {aside.name}[/]", soft_wrap=True)
    return None


def _aside(path: Path) -> Path:
    target, k = path.with_name(BROKEN + path.name), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{BROKEN}{path.name}.{k}")
    return target
