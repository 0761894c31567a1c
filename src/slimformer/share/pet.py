"""PET's sharing inside an encoder-decoder (Jeon & Kang, "Parameter-efficient Knowledge Distillation on
Transformer", PLoS ONE 2023): pairs of layers of a stack hold the same weights, so a 4+4 student stores 2+2.

- `pairs` [[0, 2], [1, 3]]: layer 2 is layer 0 run again, layer 3 is layer 1 (every parameter the two layers
  have in common is the same nn.Parameter; the second of a pair is the one that reuses).
- `swap_qk` (PET: encoder): on the second pass the self-attention Query and Key projections are swapped
  (layer 2's Query is layer 0's Key and the other way round), so the reused layer attends differently.
- `tie_q` (PET: decoder): in every layer the cross-attention Query is the self-attention Query.

Everything is parameter aliasing through the adapter's attention parts, recorded as the op `pet_share`, so
the modules stay distinct (the KV cache, hooks and ONNX export work as for any model), `num_params` and
`slimformer.save` count and store each shared tensor once, and `slimformer.load` rebuilds the aliasing.

The step `share_pairs` applies given pairs, or searches them (`encoder: search`): every pairing of the
stack's layers into pairs is scored by a short training run (`search_steps` optimizer steps on the task's
loss, then the teacher-forced loss on `search_examples` examples of the dev split, lower is better) and the
best is kept; the encoder is searched first (decoder unshared unless given), then the decoder.
"""
from __future__ import annotations

import copy
import shutil
from typing import Any, ClassVar, Literal, Union

import torch
from pydantic import Field, field_validator
from torch import nn

from ..errors import check
from ..models import apply_op, get_adapter, num_params, register_op
from ..steps import Context, StepConfig, implements

PairSpec = Union[list[list[int]], Literal["search"], None]
PET_PAIRS = [[0, 2], [1, 3]]


def _alias(dst: nn.Module, src: nn.Module, what: str) -> None:
    """Make every parameter of module dst the very parameter of src (same names and shapes)."""
    names = [n for n, p in dst._parameters.items() if p is not None]
    check(names == [n for n, p in src._parameters.items() if p is not None] and
          all(dst._parameters[n].shape == src._parameters[n].shape for n in names),
          f"pet_share: {what}: the projections differ in shape (pruned, or grouped-query attention?)")
    for n in names:
        dst._parameters[n] = src._parameters[n]


def _share_common(first: nn.Module, second: nn.Module, where: str) -> None:
    """Every parameter `second` has in common (by name) with `first` becomes first's (T5's first layer alone
    keeps its position-bias table)."""
    a, b = dict(first.named_modules()), dict(second.named_modules())
    for mname, mod in b.items():
        for pname, p in list(mod._parameters.items()):
            if p is None or mname not in a or a[mname]._parameters.get(pname) is None:
                continue
            src = a[mname]._parameters[pname]
            check(src.shape == p.shape, f"pet_share: {where}: {mname}.{pname} differs in shape "
                  f"({tuple(src.shape)} vs {tuple(p.shape)}): layers pruned differently cannot share")
            mod._parameters[pname] = src


def check_pairs(pairs: list[list[int]], n: int, stack: str) -> list[list[int]]:
    """Validated pairs (each sorted: the later layer reuses the earlier one); a layer is in at most one pair."""
    seen: set[int] = set()
    out = []
    for pair in pairs:
        check(isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(i, int) for i in pair),
              f"share_pairs: {stack}: each pair is two layer indices, got {pair!r}")
        for i in pair:
            check(0 <= i < n, f"share_pairs: {stack}: unknown layer index {i} (the {stack} has layers 0..{n - 1})")
            check(i not in seen, f"share_pairs: {stack}: layer {i} is in more than one pair")
            seen.add(i)
        out.append(sorted(pair))
    return sorted(out)


@register_op("pet_share")
def _pet_share(model: nn.Module, stack: str, pairs: list[list[int]], swap_qk: bool = False,
               tie_q: bool = False) -> None:
    ad = get_adapter(model)
    layers = ad.layers(model, stack)
    att = {a.unit: a for a in ad.attention(model)}
    if tie_q:
        for i, layer in enumerate(layers):
            self_a, cross_a = att.get(f"{stack}.{i}.self"), att.get(f"{stack}.{i}.cross")
            check(self_a is not None and cross_a is not None, f"pet_share: the {stack} has no cross-attention "
                  f"whose Query could be its self-attention Query")
            _alias(cross_a.q, self_a.q, f"{stack}.{i} cross/self Query")
            layer._tied_weights_keys = {".*": ".*"}
    for first, second in check_pairs(pairs, len(layers), stack):
        _share_common(layers[first], layers[second], f"{stack} layers {first} and {second}")
        if swap_qk:
            a, b = att[f"{stack}.{first}.self"], att[f"{stack}.{second}.self"]
            check(not a.fused, "pet_share: swap_qk needs separate Query and Key projections")
            _alias(b.q, a.k, f"{stack}.{second} Query <- {stack}.{first} Key")
            _alias(b.k, a.q, f"{stack}.{second} Key <- {stack}.{first} Query")
        # declare the aliases so transformers' save_pretrained (Trainer checkpoints) keeps one copy
        layers[second]._tied_weights_keys = {".*": ".*"}


def pet_share(model: nn.Module, stack: str, pairs: list[list[int]], swap_qk: bool = False,
              tie_q: bool = False) -> nn.Module:
    """Share layer pairs of one stack in place (with PET's Q/K swap and Query tie if asked); recorded for reload."""
    check_encoder_decoder(model, "pet_share")
    names = [s.name for s in get_adapter(model).stacks(model)]
    check(stack in names, f"pet_share: the model has no {stack} stack (it has {', '.join(names)})")
    pairs = check_pairs(pairs, len(get_adapter(model).layers(model, stack)), stack)
    if pairs or tie_q:
        apply_op(model, "pet_share", stack=stack, pairs=pairs, swap_qk=swap_qk, tie_q=tie_q)
    return model


def check_encoder_decoder(model: nn.Module, step: str) -> None:
    names = [s.name for s in get_adapter(model).stacks(model)]
    check(names == ["encoder", "decoder"], f"{step}: PET shares layers inside an encoder-decoder; this model "
          f"has only {' and '.join(names)} layers")


def pairings(n: int) -> list[list[list[int]]]:
    """Every way to split layers 0..n-1 into pairs (n odd: one layer left unshared), in a fixed order."""
    def rec(rest: list[int]) -> list[list[list[int]]]:
        if len(rest) < 2:
            return [[]]
        first, out = rest[0], []
        for j in rest[1:]:
            out += [[[first, j], *tail] for tail in rec([r for r in rest[1:] if r != j])]
        if len(rest) % 2 == 1:  # the first layer may be the unpaired one
            out += rec(rest[1:])
        return out

    return [sorted(p) for p in rec(list(range(n)))]


class SharePairs(StepConfig):
    """PET sharing in an encoder-decoder: layer pairs share weights; pairs given or searched by short runs.

    The encoder's second pass swaps Query and Key; the decoder's cross-attention Query is its self-attention
    Query."""

    step: ClassVar[str] = "share_pairs"
    encoder: PairSpec = Field(PET_PAIRS, description="encoder layer pairs (lists of two indices, the second reuses the "
                          "first), 'search', or null")
    decoder: PairSpec = Field(PET_PAIRS, description="decoder layer pairs, 'search', or null")
    swap_qk: bool = Field(True, description="encoder: swap Query and Key on a pair's second pass")
    tie_decoder_q: bool = Field(True, description="decoder: cross-attention Query is the self-attention Query")
    search_steps: int = Field(50, ge=1, description="search: optimizer steps of each candidate's training run")
    search_examples: int = Field(64, ge=1, description="search: dev examples each candidate is scored on")
    max_candidates: int = Field(6, ge=1, description="search: candidate pairings tried per stack (at most)")
    lr: float = Field(5e-4, gt=0, description="search: learning rate of the short runs")
    batch_size: int = Field(16, ge=1, description="search: batch size of the short runs")

    @field_validator("encoder", "decoder", mode="before")
    @classmethod
    def _spec(cls, v: Any) -> Any:
        check(v is None or v == "search" or isinstance(v, list),
              f"share_pairs: expected a list of layer pairs, 'search' or null, got {v!r}")
        return v

    @property
    def searches(self) -> bool:
        return "search" in (self.encoder, self.decoder)

    def preflight(self, model: nn.Module, task: Any) -> None:
        check_encoder_decoder(model, self.step)
        ad = get_adapter(model)
        for stack in ("encoder", "decoder"):
            spec = getattr(self, stack)
            if isinstance(spec, list):
                check_pairs(spec, len(ad.layers(model, stack)), stack)
        check(not self.searches or task is not None, "share_pairs: search needs task data (--task and --data)")


def apply_pairs(model: nn.Module, cfg: SharePairs, encoder: list[list[int]] | None,
                decoder: list[list[int]] | None) -> nn.Module:
    """Apply PET sharing with resolved pairs (None: that stack's layers stay unshared)."""
    pet_share(model, "encoder", encoder or [], swap_qk=cfg.swap_qk)
    pet_share(model, "decoder", decoder or [], tie_q=cfg.tie_decoder_q)
    return model


def heldout_loss(model: nn.Module, tokenizer: Any, task: Any, n: int, max_len: int, batch_size: int = 16) -> float:
    """Mean teacher-forced token loss of model on the first n examples of the dev split."""
    pairs = task.split(task.eval_split("dev"))[:n]
    ds = task.encode(tokenizer, pairs, max_len)
    collate = task.collator(tokenizer, model)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(ds), batch_size):
            batch = collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))])
            tokens = int(batch["labels"].ne(-100).sum())
            total += float(model(**batch).loss) * tokens
            count += tokens
    return total / max(1, count)


def search_pairs(model: nn.Module, cfg: SharePairs, ctx: Context) -> tuple[nn.Module, dict[str, Any]]:
    """Resolve 'search' stacks by short training runs (encoder first); returns (shared model, report)."""
    from ..train import TrainConfig, make_trainer, run_training

    task = ctx.require_task(cfg.step)
    ad = get_adapter(model)
    chosen: dict[str, list[list[int]] | None] = {
        s: (None if getattr(cfg, s) == "search" else getattr(cfg, s)) for s in ("encoder", "decoder")}
    report: dict[str, Any] = {}
    for stack in ("encoder", "decoder"):
        if getattr(cfg, stack) != "search":
            continue
        scores = []
        for i, cand in enumerate(pairings(len(ad.layers(model, stack)))[:cfg.max_candidates]):
            trial = apply_pairs(copy.deepcopy(model), cfg, **{**chosen, stack: cand})
            out = ctx.work_dir / f"share-search-{stack}-{i}"
            tcfg = TrainConfig(max_steps=cfg.search_steps, lr=cfg.lr, batch_size=cfg.batch_size, max_len=ctx.max_len,
                               seed=ctx.seed, save_steps=cfg.search_steps, warmup_ratio=0.0)
            run_training(make_trainer(trial, ctx.tokenizer, task, tcfg, out), out, resume=False)
            scores.append((heldout_loss(trial, ctx.tokenizer, task, cfg.search_examples, ctx.max_len), i, cand))
            shutil.rmtree(out, ignore_errors=True)
        best = min(scores)
        chosen[stack] = best[2]
        report[stack] = {"candidates": [{"pairs": c, "dev_loss": round(s, 6)} for s, _, c in scores],
                         "best": best[2]}
    return apply_pairs(model, cfg, chosen["encoder"], chosen["decoder"]), report


def share_pairs(model: nn.Module, cfg: SharePairs, ctx: Context | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Apply (or search, then apply) PET sharing to model in place; returns (model, what was chosen)."""
    cfg.preflight(model, ctx.task if ctx is not None else None)
    before = num_params(model)
    if cfg.searches:
        check(ctx is not None, "share_pairs: search needs a context with task data")
        assert ctx is not None
        model, report = search_pairs(model, cfg, ctx)
    else:
        model, report = apply_pairs(model, cfg, cfg.encoder, cfg.decoder), {}  # type: ignore[arg-type]
    report["params_before_after"] = [before, num_params(model)]
    return model, report


@implements(SharePairs)
def share_pairs_step(model: nn.Module, cfg: SharePairs, ctx: Context) -> nn.Module:
    model, report = share_pairs(model, cfg, ctx)
    for k, v in report.items():
        ctx.note(k if k == "params_before_after" else f"search_{k}", v)
    return model
