"""Load and save models: local directories, hub ids, packaged short names, and slimformer outputs.

The model class comes from the task (its `AutoModelFor...` head), never from a guess on the checkpoint's
class name: a checkpoint whose head is the task's keeps it (and its label count is checked); any other gets
the task's head, newly initialised, and says so. Loading is strict: a tensor the class needs that the
checkpoint lacks is an error (except a newly created task head); pickle checkpoints are refused.
"""
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

from ..errors import SlimformerError, check
from ..fsutil import atomic_dir
from .arch import get_adapter, supported_model_types
from .packaged import PACKAGED, packaged_path
from .surgery import recorded_ops, replay_ops

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "source.spm", "sentencepiece.bpe.model", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
LEGACY_HEADS = {"classification": "AutoModelForSequenceClassification", "mlm": "AutoModelForMaskedLM",
                "base": "AutoModel", "lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def resolve(name: str) -> str:
    """A local path for packaged short names and directories; hub ids are returned unchanged."""
    if name in PACKAGED:
        return packaged_path(name)
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise SlimformerError(f"{name}: not a model directory (no config.json)")
        return str(p.resolve())
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if looks_local or name.count("/") > 1:
        raise SlimformerError(f"{name}: no such model directory")
    return name  # a hub id


def read_config(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except RecursionError as e:
        raise SlimformerError(f"cannot read the model config of {path}: config.json is nested too deeply") from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimformerError(f"cannot read the model config of {path}: {first[:300]}") from e
    check(getattr(config, "model_type", "") in supported_model_types(),
          f"{path}: model type '{getattr(config, 'model_type', '?')}' is not supported "
          f"(slimformer has adapters for {', '.join(supported_model_types())})")
    return config


def model_class(config: Any, task: Any = None, head: str | None = None) -> tuple[Any, bool]:
    """(class to instantiate, whether the checkpoint's own head is that class's head)."""
    import transformers

    arch = (getattr(config, "architectures", None) or [""])[0]
    arch_cls = None
    if arch:
        arch_cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
        check(arch_cls is not None and isinstance(arch_cls, type),
              f"unknown architecture {arch!r} in config.json (not a transformers model class)")
        check(getattr(arch_cls, "config_class", None) is type(config),
              f"config.json names architecture {arch} but its model_type is '{config.model_type}'")
    auto_name = task.head if task is not None else LEGACY_HEADS.get(head or "", head)
    if auto_name is None:
        return (arch_cls or transformers.AutoModel), True
    auto = getattr(transformers, auto_name, None)
    check(auto is not None, f"unknown model head {auto_name}")
    try:
        wanted = auto._model_mapping[type(config)]
    except KeyError as e:
        what = f"task '{task.name}'" if task is not None else f"head {auto_name}"
        raise SlimformerError(f"{what} needs a {auto_name.replace('AutoModel', 'model') or 'model'} head, which "
                              f"{config.model_type} models do not have") from e
    return wanted, wanted is arch_cls


def _check_files(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        return  # a hub id: transformers checks it
    if not any(p.glob("*.safetensors")):
        pickles = [f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise SlimformerError(f"{path}: pickle checkpoints are not loaded ({pickles[0]}); convert it to "
                                  f"safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))")
        raise SlimformerError(f"{path}: no model.safetensors")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise SlimformerError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); copy the "
                              f"tokenizer of the model it was trained from into it")


def load_tokenizer(path: str, name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, json.JSONDecodeError) as e:
        raise SlimformerError(f"cannot load the tokenizer of {name}: {str(e).splitlines()[0][:300]}") from e


def load(name: str, task: Any = None, head: str | None = None, num_labels: int | None = None,
         trust_remote_code: bool = False) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer) strictly. `task` picks the head class and its size (labels); without a task,
    the checkpoint's own class (or `head`: an AutoModel class name or classification / mlm / base / lm /
    seq2seq). A slimformer output is rebuilt by replaying its structural ops and loading its safetensors."""
    path = resolve(name)
    config = read_config(path, trust_remote_code)
    _check_files(path)
    cls, own_head = model_class(config, task, head)
    tokenizer = load_tokenizer(path, name, trust_remote_code)
    kwargs = dict(task.model_kwargs()) if task is not None else {}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if own_head:
        kwargs = {}  # the checkpoint's head keeps its own size and labels (checked against the task below)
    ops = recorded_ops(config)
    check(isinstance(ops, list), f"{name}: config.json 'slimformer.ops' must be a list of ops")
    try:
        if ops:
            model = _load_with_ops(path, config, cls, ops, own_head, kwargs)
        else:
            model = _from_pretrained(cls, path, own_head, kwargs, trust_remote_code)
    except SlimformerError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimformerError(f"cannot load the weights of {name}: {first[:300]}") from e
    if hasattr(model, "can_generate") and model.can_generate():
        _use_cache(model)
    if task is not None:
        task.check_model(model, fresh_head=not own_head)
    if not own_head and task is not None and task.head != "AutoModel":
        from ..progress import console

        console.print(f"[yellow]{name}: the {task.head.replace('AutoModelFor', '')} head is new (randomly "
                      f"initialised): train it (finetune or distill) before its scores mean anything")
    model.eval()
    return model, tokenizer


def _use_cache(model: nn.Module) -> None:
    model.config.use_cache = True
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = True


def _from_pretrained(cls: Any, path: str, own_head: bool, kwargs: dict[str, Any], trust: bool) -> nn.Module:
    model, info = cls.from_pretrained(path, trust_remote_code=trust, use_safetensors=True,
                                      output_loading_info=True, **kwargs)
    missing = [k for k in info.get("missing_keys", []) if not _in_new_head(model, k, own_head)]
    if missing:
        raise SlimformerError(f"{path}: the checkpoint lacks {len(missing)} tensor(s) the model needs "
                              f"({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''})")
    bad = info.get("mismatched_keys", [])
    if bad:
        first = bad[0][0] if isinstance(bad[0], (tuple, list)) else bad[0]
        raise SlimformerError(f"{path}: {len(bad)} tensor(s) have the wrong shape (first: {first})")
    return model


def _in_new_head(model: nn.Module, key: str, own_head: bool) -> bool:
    """A missing key that belongs to a head this load creates (expected to be fresh)."""
    if own_head:
        return False
    heads = get_adapter(model).head_modules(model)
    return any(key == h or key.startswith(h + ".") for h in heads)


def build_with_ops(path: str, config: Any, cls: Any, ops: list[dict[str, Any]], kwargs: dict[str, Any]
                   ) -> nn.Module:
    """The architecture of a slimformer output, random weights: its base config (plus kwargs), then its ops."""
    meta = dict(config.slimformer)
    base = meta.get("base_config") or config.to_dict()
    check(isinstance(base, dict), f"{path}: config.json 'slimformer.base_config' must be a mapping")
    base_config = type(config).from_dict(base)
    base_config.slimformer = {}
    for k, v in kwargs.items():
        setattr(base_config, k, v)
    model = cls.from_config(base_config) if cls.__name__.startswith("AutoModel") else cls._from_config(base_config)
    replay_ops(model, ops)
    return model


def _load_with_ops(path: str, config: Any, cls: Any, ops: list[dict[str, Any]], own_head: bool,
                   kwargs: dict[str, Any]) -> nn.Module:
    weights = Path(path) / "model.safetensors"
    check(weights.is_file(), f"{path}: slimformer model without model.safetensors")
    model = build_with_ops(path, config, cls, ops, kwargs)
    for key, value in config.to_dict().items():  # the final config (layer counts etc.) as saved
        if not key.startswith("_") and not (key in kwargs and not own_head):
            setattr(model.config, key, value)
    missing, unexpected = load_model(model, str(weights), strict=False)
    missing = [k for k in missing if not _in_new_head(model, k, own_head)]
    unexpected = [k for k in unexpected if own_head or not any(k.startswith(h + ".") for h in
                                                               get_adapter(model).head_modules(model))]
    if missing or unexpected:
        raise SlimformerError(f"{path}: weights do not match the architecture (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return model


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's absolute position table allows (None: relative / rotary positions
    without a hard limit that matters here)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", "") == "t5":
        return None
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_positions(model: nn.Module, **lengths: int | None) -> None:
    """One line when a sequence length (named by its option) exceeds the model's positions."""
    limit = max_positions(model)
    for name, n in lengths.items():
        if limit is not None and n is not None:
            check(n <= limit, f"{name} {n} exceeds the {limit} positions of the model")


def save(model: nn.Module, tokenizer: Any, out: str | os.PathLike) -> Path:
    """Write config, safetensors weights (shared tensors once) and tokenizer to `out`, atomically."""
    out = Path(out)
    if type(model).__module__.startswith("transformers."):
        model.config.architectures = [type(model).__name__]  # reload picks the same class (and head)
    generative = hasattr(model, "can_generate") and model.can_generate()
    if generative:
        _use_cache(model)  # training switches the KV cache off; a saved model generates with it
    with atomic_dir(out) as tmp:
        model.config.save_pretrained(tmp)
        if generative:
            model.generation_config.save_pretrained(tmp)
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
