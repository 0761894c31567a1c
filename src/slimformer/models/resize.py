"""A model config of another size, through the family table (which config keys hold width, layers, FFN, heads).

Used to build a fresh, narrower student from a teacher's config without naming architecture-specific keys
outside the adapters: `resized_config(teacher.config, width=256, stacks={"encoder": {"layers": 4, "ffn": 640}})`.
"""
from __future__ import annotations

import copy
from typing import Any

from ..errors import check
from .arch import get_adapter

SIZE_FIELDS = ("layers", "ffn", "heads")


def resized_config(config: Any, width: int | None = None, stacks: dict[str, dict[str, int]] | None = None) -> Any:
    """A copy of config with a new width and per-stack layer count, FFN width and head count (unset: unchanged).

    A family whose stacks share one config key (T5's `d_ff`) refuses different values for them in one line."""
    family = get_adapter(config.model_type).family
    cfg = copy.deepcopy(config)
    cfg.slimformer = {}  # a fresh config describes the model fully: no structural ops
    set_keys: dict[str, tuple[int, str]] = {}

    def put(keys: tuple[str, ...], value: int, what: str) -> None:
        check(bool(keys), f"{config.model_type}: the family table names no config key for {what}")
        check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
              f"{what} must be an integer >= 1, got {value!r}")
        for key in keys:
            old = set_keys.get(key)
            check(old is None or old[0] == value, f"{config.model_type} keeps {old[1] if old else ''} and {what} "
                  f"in one config key ({key}): they cannot differ ({old[0] if old else ''} vs {value})")
            set_keys[key] = (value, what)
            setattr(cfg, key, value)

    if width is not None:
        put(family.width_keys, width, "the width")
    names = [s.name for s in family.stacks]
    for name, sizes in (stacks or {}).items():
        check(name in names, f"{config.model_type} has no {name} stack (it has {', '.join(names)})")
        spec = next(s for s in family.stacks if s.name == name)
        unknown = sorted(set(sizes) - set(SIZE_FIELDS))
        check(not unknown, f"{name}: unknown size field {unknown[0] if unknown else ''} "
              f"(use {', '.join(SIZE_FIELDS)})")
        for field, keys in (("layers", spec.count_keys), ("ffn", spec.ffn_keys), ("heads", spec.head_keys)):
            if sizes.get(field) is not None:
                put(keys, sizes[field], f"the {name} {field}")
    d = getattr(cfg, family.width_keys[0]) if family.width_keys else None
    for spec in family.stacks:
        for key in spec.head_keys:
            heads = getattr(cfg, key, None)
            if isinstance(d, int) and isinstance(heads, int):
                check(d % heads == 0, f"the width {d} is not divisible by the {spec.name} head count {heads}")
                for hk in family.head_dim_keys:  # a head size kept apart from the width follows it
                    setattr(cfg, hk, d // heads)
    return cfg
