"""Architecture adapters as data: where a family keeps its stacks, attention blocks, FFNs and embeddings.

A family is a `Family` table (module paths per role, as strings), registered with `register_family`; the one
`Adapter` class interprets every table. A model has one or more layer stacks (`encoder`, `decoder`); each layer
has attention blocks (`self`, and `cross` in a decoder of an encoder-decoder) and one FFN, which may be gated.
Structural units are named `stack.layer.kind` (`decoder.3.cross`) and FFNs `stack.layer` (`encoder.0`).

    FAMILY = Family(model_types=("llama",), backbones=("model",), word_embeddings="embed_tokens",
                    stacks=(StackSpec("decoder", "layers", (AttnSpec("self", "self_attn", q="self_attn.q_proj",
                            k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj"),),
                            FFNSpec(up=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj"),
                            count_keys=("num_hidden_layers",)),), heads=("lm_head", "score"))
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from ..errors import SlimformerError, check
from .linear import in_features, out_features, slice_in, slice_out
from .spec import AttentionParts, AttnSpec, FFNParts, FFNSpec, Family, Stack, StackSpec  # noqa: F401 (re-exported)


def submodule(root: nn.Module, path: str) -> nn.Module:
    mod = root
    for part in path.split(".") if path else []:
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def _has(root: nn.Module, path: str) -> bool:
    try:
        submodule(root, path)
        return True
    except (AttributeError, IndexError, TypeError):
        return False


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(submodule(root, parent), name, module)


class Adapter:
    """Interprets a Family table on a model. Techniques use only this interface."""

    def __init__(self, family: Family):
        self.family = family

    # --- locating ------------------------------------------------------------------------------
    def backbone_prefix(self, model: nn.Module) -> str:
        for name in (*self.family.backbones, ""):
            if (not name or hasattr(model, name)) and any(_has(model, _join(name, s.layers))
                                                          for s in self.family.stacks):
                return name
        raise SlimformerError(f"cannot find the layers of {type(model).__name__} "
                              f"(expected a {'/'.join(self.family.model_types)} model)")

    def backbone(self, model: nn.Module) -> nn.Module:
        return submodule(model, self.backbone_prefix(model))

    def stacks(self, model: nn.Module) -> list[Stack]:
        """The layer stacks this model has (an encoder-only T5 has no decoder)."""
        bb = self.backbone(model)
        out = [Stack(s.name, s, submodule(bb, s.layers)) for s in self.family.stacks if _has(bb, s.layers)]
        check(bool(out), f"{type(model).__name__}: no layer stack found")
        return out

    def stack(self, model: nn.Module, name: str | None = None) -> Stack:
        stacks = self.stacks(model)
        if name is None:
            return stacks[0]
        for s in stacks:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in stacks)
        raise SlimformerError(f"{type(model).__name__} has no {name} stack (it has {names})")

    def layers(self, model: nn.Module, stack: str | None = None) -> nn.ModuleList:
        return self.stack(model, stack).layers

    def is_multi_stack(self, model: nn.Module) -> bool:
        return len(self.stacks(model)) > 1

    def layer_prefixes(self, model: nn.Module) -> dict[str, tuple[str, int]]:
        """{'model.encoder.layers.3.': ('encoder', 3)} for every layer (parameter-name prefixes)."""
        bb = self.backbone_prefix(model)
        out = {}
        for st in self.stacks(model):
            for i in range(len(st.layers)):
                out[_join(bb, st.spec.layers) + f".{i}."] = (st.name, i)
        return out

    def locate(self, model: nn.Module, name: str) -> tuple[str, int] | None:
        """(stack, layer) of a parameter or module name, or None outside the stacks."""
        for prefix, where in self.layer_prefixes(model).items():
            if (name + ".").startswith(prefix):
                return where
        return None

    # --- blocks --------------------------------------------------------------------------------
    def attention(self, model: nn.Module) -> list[AttentionParts]:
        """Every attention block of the model, in stack, layer, kind order."""
        out = []
        for st in self.stacks(model):
            for i, layer in enumerate(st.layers):
                for spec in st.spec.attention:
                    if _has(layer, spec.path):
                        out.append(self._attention(layer, spec, f"{st.name}.{i}.{spec.kind}", model))
        return out

    def _attention(self, layer: nn.Module, spec: AttnSpec, unit: str, model: nn.Module) -> AttentionParts:
        mod = submodule(layer, spec.path)
        hd = next((int(getattr(mod, a)) for a in spec.head_dim_attrs if isinstance(getattr(mod, a, None), int)), None)
        check(hd is not None, f"{unit}: cannot tell the head size of {type(mod).__name__}")
        o = submodule(layer, spec.o)
        norm = submodule(layer, spec.norm) if spec.norm and _has(layer, spec.norm) else None
        if spec.qkv:
            qkv = submodule(layer, spec.qkv)
            heads = in_features(o) // hd
            return AttentionParts(unit, spec.kind, mod, qkv, qkv, qkv, o, heads, heads, hd, True, spec, norm)
        q, k, v = (submodule(layer, p) for p in (spec.q, spec.k, spec.v))
        return AttentionParts(unit, spec.kind, mod, q, k, v, o, out_features(q) // hd, out_features(k) // hd, hd,
                              False, spec, norm)

    def ffn(self, model: nn.Module) -> list[FFNParts]:
        out = []
        for st in self.stacks(model):
            spec = st.spec.ffn
            for i, layer in enumerate(st.layers):
                ups = [submodule(layer, p) for p in spec.up if _has(layer, p)]
                down = submodule(layer, spec.down)
                blocks = [submodule(layer, p) for p in spec.blocks if _has(layer, p)] or [*ups, down]
                norm = submodule(layer, spec.norm) if spec.norm and _has(layer, spec.norm) else None
                lin = submodule(layer, spec.linear_up) if spec.linear_up and _has(layer, spec.linear_up) else None
                out.append(FFNParts(f"{st.name}.{i}", ups, down, blocks, norm, lin))
        return out

    def attention_unit(self, model: nn.Module, unit: str) -> AttentionParts:
        unit = self.normalize_unit(model, unit, attention=True)
        for a in self.attention(model):
            if a.unit == unit:
                return a
        raise SlimformerError(f"no attention block '{unit}' (the model has {', '.join(self.unit_names(model))})")

    def ffn_unit(self, model: nn.Module, unit: str) -> FFNParts:
        unit = self.normalize_unit(model, unit, attention=False)
        for f in self.ffn(model):
            if f.unit == unit:
                return f
        raise SlimformerError(f"no FFN '{unit}' (the model has {', '.join(f.unit for f in self.ffn(model))})")

    def unit_names(self, model: nn.Module) -> list[str]:
        return [a.unit for a in self.attention(model)]

    def normalize_unit(self, model: nn.Module, unit: Any, attention: bool) -> str:
        """A bare layer index ('3', as older slimformer outputs record) names the first stack's layer."""
        s = str(unit)
        if s.lstrip("-").isdigit():
            first = self.stacks(model)[0].name
            return f"{first}.{int(s)}.self" if attention else f"{first}.{int(s)}"
        return s

    # --- structural changes ----------------------------------------------------------------------
    def keep_heads(self, model: nn.Module, parts: AttentionParts, kept: list[int]) -> None:
        """Keep units `kept` (heads; whole key/value groups under GQA) of one attention block, in place."""
        d, g = parts.head_dim, parts.group
        q_heads = [u * g + j for u in sorted(kept) for j in range(g)]
        q_idx = _rows(q_heads, d)
        kv_idx = _rows(sorted(kept), d)
        if parts.fused:
            w = parts.heads * d
            slice_out(parts.q, torch.cat([q_idx, w + kv_idx, 2 * w + kv_idx]))
        else:
            slice_out(parts.q, q_idx)
            slice_out(parts.k, kv_idx)
            slice_out(parts.v, kv_idx)
        slice_in(parts.o, q_idx)
        spec = parts.spec
        assert spec is not None
        for a in spec.head_attrs:
            if hasattr(parts.module, a):
                setattr(parts.module, a, len(q_heads))
        for a in spec.width_attrs:
            if hasattr(parts.module, a):
                setattr(parts.module, a, len(q_heads) * d)
        if "keep_heads" in self.family.hooks:
            self.family.hooks["keep_heads"](model, parts, sorted(kept))

    def keep_ffn(self, parts: FFNParts, kept: list[int]) -> None:
        idx = torch.tensor(sorted(kept), dtype=torch.long)
        for up in parts.up:
            slice_out(up, idx)
        slice_in(parts.down, idx)

    def set_layers(self, model: nn.Module, stack: str, keep: list[int]) -> None:
        """Keep layers `keep` of a stack (in order); config counts, layer_idx and layer_types follow."""
        st = self.stack(model, stack)
        old = st.layers
        new = nn.ModuleList([old[i] for i in keep])
        set_submodule(self.backbone(model), st.spec.layers, new)
        for key in st.spec.count_keys:
            setattr(model.config, key, len(keep))
        types = getattr(model.config, "layer_types", None)
        if isinstance(types, list) and len(types) == len(old) and len(self.stacks(model)) == 1:
            model.config.layer_types = [types[i] for i in keep]
        for i, layer in enumerate(new):
            for m in layer.modules():
                if isinstance(getattr(m, "layer_idx", None), int):
                    m.layer_idx = i
        if "keep_layers" in self.family.hooks:
            self.family.hooks["keep_layers"](model, st, old, keep)

    # --- embeddings and heads ----------------------------------------------------------------------
    def word_embeddings(self, model: nn.Module) -> nn.Module:
        return submodule(self.backbone(model), self.family.word_embeddings)

    def set_word_embeddings(self, model: nn.Module, module: nn.Module) -> None:
        set_submodule(self.backbone(model), self.family.word_embeddings, module)

    def embedding_modules(self, model: nn.Module) -> list[nn.Module]:
        bb = self.backbone(model)
        paths = self.family.embeddings or (self.family.word_embeddings,)
        return [submodule(bb, p) for p in paths if _has(bb, p)]

    def _optional(self, model: nn.Module, path: str) -> nn.Module | None:
        bb = self.backbone(model)
        return submodule(bb, path) if path and _has(bb, path) else None

    def position_embeddings(self, model: nn.Module) -> nn.Module | None:
        return self._optional(model, self.family.position_embeddings)

    def token_type_embeddings(self, model: nn.Module) -> nn.Module | None:
        return self._optional(model, self.family.token_type_embeddings)

    def set_token_type_embeddings(self, model: nn.Module, module: nn.Module) -> None:
        check(bool(self.family.token_type_embeddings), f"{type(model).__name__} has no token-type embeddings")
        set_submodule(self.backbone(model), self.family.token_type_embeddings, module)

    def pooler(self, model: nn.Module) -> nn.Module | None:
        return self._optional(model, self.family.pooler)

    def set_pooler(self, model: nn.Module, module: nn.Module) -> None:
        check(bool(self.family.pooler), f"{type(model).__name__} has no pooler")
        set_submodule(self.backbone(model), self.family.pooler, module)

    def head_modules(self, model: nn.Module) -> list[str]:
        """Names of task-head modules (classifier, pooler, LM head) that compression leaves alone."""
        names = [h for h in self.family.heads if _has(model, h) and submodule(model, h) is not model]
        bb = self.backbone_prefix(model)
        if self.family.pooler and bb and _has(model, _join(bb, self.family.pooler)):
            if submodule(model, _join(bb, self.family.pooler)) is not None:
                names.append(_join(bb, self.family.pooler))
        return names

    def lm_head_tied(self, model: nn.Module) -> bool:
        """Whether an output projection shares its weight with the word embeddings."""
        emb = getattr(self.word_embeddings(model), "weight", None)
        return any(getattr(submodule(model, h), "weight", None) is emb for h in self.head_modules(model))

    # --- descriptions ------------------------------------------------------------------------------
    def geometry(self, model: nn.Module) -> dict[str, Any]:
        """Layers, heads, KV heads and FFN widths per stack, as they are now (after any pruning)."""
        att = self.attention(model)
        ffn = {f.unit: f.width for f in self.ffn(model)}
        out: dict[str, Any] = {"model_type": model.config.model_type, "stacks": {}}
        for st in self.stacks(model):
            mine = [a for a in att if a.unit.startswith(st.name + ".")]
            out["stacks"][st.name] = {
                "layers": len(st.layers),
                "heads": {a.unit: a.heads for a in mine},
                "kv_heads": {a.unit: a.kv_heads for a in mine if a.kv_heads != a.heads},
                "ffn": {u: w for u, w in ffn.items() if u.startswith(st.name + ".")},
                "gated_ffn": any(len(f.up) > 1 for f in self.ffn(model) if f.unit.startswith(st.name + ".")),
            }
        return out

    def component_map(self, model: nn.Module) -> dict[str, str]:
        """{module name: component} for every module with parameters of its own."""
        ids: dict[int, str] = {}
        for m in self.embedding_modules(model):
            for sub in m.modules():
                ids[id(sub)] = "embeddings"
        for h in self.head_modules(model):
            for sub in submodule(model, h).modules():
                ids[id(sub)] = "head"
        for a in self.attention(model):
            comp = "attention" if a.kind == "self" else "cross-attention"
            for sub in (a.module, a.q, a.k, a.v, a.o):
                for s in sub.modules():
                    ids.setdefault(id(s), comp)
        for f in self.ffn(model):
            for blk in (*f.blocks, *f.up, f.down):
                for s in blk.modules():
                    ids.setdefault(id(s), "ffn")
        out = {}
        for n, m in model.named_modules():
            if "Norm" in type(m).__name__ or isinstance(m, nn.LayerNorm):
                out[n] = "norm"
            elif id(m) in ids:
                out[n] = ids[id(m)]
        return out


def _rows(heads: list[int], d: int) -> torch.Tensor:
    return torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a and b else a or b


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    for t in family.model_types:
        _FAMILIES[t] = family
    return family


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def get_adapter(model_or_type: nn.Module | str) -> Adapter:
    """The adapter for a model (by its config.model_type) or a model_type string."""
    mt = model_or_type if isinstance(model_or_type, str) else getattr(getattr(model_or_type, "config", None),
                                                                      "model_type", "?")
    if mt not in _FAMILIES:
        raise SlimformerError(f"no adapter for model type '{mt}': slimformer supports "
                              f"{', '.join(supported_model_types())}")
    return Adapter(_FAMILIES[mt])


def iter_units(model: nn.Module, kind: str) -> Iterator[tuple[str, int]]:
    """(unit name, prunable count) for kind 'heads' (attention blocks) or 'ffn'."""
    ad = get_adapter(model)
    if kind == "heads":
        for a in ad.attention(model):
            yield a.unit, a.units
    else:
        for f in ad.ffn(model):
            yield f.unit, f.width
