"""Truncated-SVD factorization of Linear layers: W (out x in) ~ B (out x r) @ A (r x in).

The factorized layer is a `LowRankLinear` holding two plain nn.Linear (x -> A x -> B x + b), installed by
the replayable op `low_rank` ({module name: rank}), so it saves, reloads (`slimformer.load`) and exports
to ONNX like any other module, and later steps (quantization) see two ordinary Linear layers.

A rank-r factorization of an (in x out) weight costs r * (in + out) parameters (plus the bias), so it
saves parameters only when r < in * out / (in + out); layers where the chosen rank would not save are
left dense and reported.
"""
from __future__ import annotations

import math
import re
from typing import ClassVar, Literal, Sequence

import torch
from pydantic import model_validator
from torch import nn

from ..errors import SlimformerError, check
from ..models import apply_op, get_adapter, num_params, register_op
from ..progress import console
from ..steps import Context, StepConfig, implements


class LowRankLinear(nn.Module):
    """y = second(first(x)): first is Linear(in, rank, bias=False), second is Linear(rank, out, bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        """The best rank-`rank` approximation (Eckart-Young) of linear, singular values split evenly."""
        check_rank(linear, rank)
        w = linear.weight.detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        root = s[:rank].sqrt()
        mod = cls(linear.in_features, linear.out_features, rank, linear.bias is not None)
        mod.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mod.first.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype))
            mod.second.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype))
            if linear.bias is not None:
                mod.second.bias.copy_(linear.bias.detach())
        mod.train(linear.training)
        return mod

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def check_rank(linear: nn.Module, rank: int, name: str = "layer") -> None:
    check(isinstance(linear, nn.Linear), f"factorize: {name} is {type(linear).__name__}, not a Linear")
    top = min(linear.in_features, linear.out_features)
    check(isinstance(rank, int) and 1 <= rank <= top,
          f"factorize: rank {rank} for {name} is outside 1..{top} (min of its {linear.out_features}x"
          f"{linear.in_features} weight)")


def break_even(linear: nn.Linear) -> float:
    """The rank at which the factorization has as many weight parameters as the dense layer."""
    i, o = linear.in_features, linear.out_features
    return i * o / (i + o)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    try:
        return (model.get_submodule(parent_name) if parent_name else model), child
    except AttributeError as e:
        raise SlimformerError(f"factorize: no module named {name}") from e


@register_op("low_rank")
def _low_rank(model: nn.Module, ranks: dict[str, int]) -> None:
    done: dict[tuple[int, int, int], LowRankLinear] = {}  # Linears sharing weights (share_layers) stay shared
    for name, rank in ranks.items():
        parent, child = _parent(model, name)
        lin = getattr(parent, child, None)
        check_rank(lin, rank, name)  # type: ignore[arg-type]
        key = (id(lin.weight), id(lin.bias), rank)  # type: ignore[union-attr]
        if key in done:
            setattr(parent, child, _alias(done[key]))
        else:
            done[key] = LowRankLinear.from_linear(lin, rank)  # type: ignore[arg-type]
            setattr(parent, child, done[key])


def _alias(mod: LowRankLinear) -> LowRankLinear:
    """A distinct module object over the same parameter tensors (hooks stay per layer, tensors are stored once)."""
    new = LowRankLinear.__new__(LowRankLinear)
    nn.Module.__init__(new)
    new.in_features, new.out_features, new.rank = mod.in_features, mod.out_features, mod.rank
    new.first, new.second = nn.Linear.__new__(nn.Linear), nn.Linear.__new__(nn.Linear)
    for dst, src in ((new.first, mod.first), (new.second, mod.second)):
        nn.Module.__init__(dst)
        dst.in_features, dst.out_features = src.in_features, src.out_features
        dst.register_parameter("weight", src.weight)
        dst.register_parameter("bias", src.bias)
    new.train(mod.training)
    return new


def factorize_linears(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace each named Linear by its rank-r SVD factorization (recorded so the model reloads)."""
    mods = dict(model.named_modules())
    for name, r in ranks.items():
        check(name in mods, f"factorize: no module named {name}")
        check_rank(mods[name], r, name)
    if ranks:
        apply_op(model, "low_rank", ranks=dict(ranks))
    return model


# --- layer selection and rank choice -------------------------------------------------------------------
def select_layers(model: nn.Module, parts: Sequence[str] = ("attention", "ffn"), include: Sequence[str] | None = None,
                  exclude: Sequence[str] = ()) -> list[str]:
    """Names of the Linear layers to factorize: the adapter's attention / FFN projections, or every Linear
    whose name matches an `include` regex; never the task head; minus `exclude` regexes."""
    from ..quantize.ops import linearize

    linearize(model)
    adapter = get_adapter(model)
    heads = adapter.head_modules(model)
    names = {id(m): n for n, m in model.named_modules()}
    if include is None:
        mods: list[nn.Module] = []
        if "attention" in parts:
            for a in adapter.attention(model):
                mods += [a.q, a.k, a.v, a.o] if not a.fused else [a.q, a.o]
        if "ffn" in parts:
            for f in adapter.ffn(model):
                mods += [*f.up, f.down]
        chosen = list(dict.fromkeys(names[id(m)] for m in mods if isinstance(m, nn.Linear)))
    else:
        chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                  and any(re.search(p, n) for p in include)]
    chosen = [n for n in chosen if not any(n == h or n.startswith(h + ".") for h in heads)]
    return [n for n in chosen if not any(re.search(p, n) for p in exclude)]


def spectrum(linear: nn.Linear) -> torch.Tensor:
    return torch.linalg.svdvals(linear.weight.detach().double())


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest r whose top-r singular values hold `energy` of the squared Frobenius norm."""
    e = (s ** 2).cumsum(0)
    if float(e[-1]) == 0.0:
        return 1
    return int(torch.searchsorted(e / e[-1], torch.tensor(energy - 1e-12, dtype=e.dtype)).item()) + 1


def ratio_rank(linear: nn.Linear, ratio: float) -> int:
    """Rank whose factorization keeps `ratio` of the layer's weight parameters."""
    return max(1, math.floor(ratio * break_even(linear)))


def allocate_by_spectrum(layers: dict[str, nn.Linear], ratio: float) -> dict[str, int]:
    """Ranks under one global budget (ratio of the layers' weight parameters): greedily keep the singular
    directions with the largest share of their layer's energy per parameter they cost (in + out)."""
    budget = ratio * sum(m.in_features * m.out_features for m in layers.values())
    cands = []
    ranks = {n: 1 for n in layers}
    spent = sum(m.in_features + m.out_features for m in layers.values())
    for n, m in layers.items():
        s2 = spectrum(m) ** 2
        share = s2 / max(float(s2.sum()), 1e-30)
        cost = m.in_features + m.out_features
        cands += [(float(share[i]) / cost, n, cost) for i in range(1, len(share))]
    for _, n, cost in sorted(cands, key=lambda c: -c[0]):  # per layer, shares decrease with the index
        if spent + cost > budget:
            continue
        ranks[n] += 1
        spent += cost
    return ranks


class Factorize(StepConfig):
    """Truncated-SVD factorization of Linear layers (default: every attention and FFN projection).

    Give exactly one of `rank` (same rank everywhere), `ratio` (keep this fraction of each layer's weight
    parameters; with allocation=spectrum a global budget shared by the layers according to their
    singular-value spectra) or `energy` (per layer, the smallest rank keeping this fraction of the squared
    singular values). Layers where the rank would not save parameters stay dense (reported).
    """

    step: ClassVar[str] = "factorize"
    parts: list[Literal["attention", "ffn"]] = ["attention", "ffn"]
    include: list[str] | None = None
    exclude: list[str] = []
    rank: int | None = None
    ratio: float | None = None
    energy: float | None = None
    allocation: Literal["uniform", "spectrum"] = "uniform"

    @model_validator(mode="after")
    def _one_rule(self) -> "Factorize":
        given = [k for k in ("rank", "ratio", "energy") if getattr(self, k) is not None]
        check(len(given) == 1, "factorize: give exactly one of rank, ratio, energy")
        check(self.rank is None or self.rank >= 1, f"factorize: rank must be >= 1, got {self.rank}")
        check(self.ratio is None or 0 < self.ratio < 1, f"factorize: ratio must be in (0, 1), got {self.ratio}")
        check(self.energy is None or 0 < self.energy <= 1, f"factorize: energy must be in (0, 1], got {self.energy}")
        check(self.allocation == "uniform" or self.ratio is not None,
              "factorize: allocation=spectrum needs ratio (the global parameter budget)")
        for p in (self.include or []) + self.exclude:
            try:
                re.compile(p)
            except re.error as e:
                raise SlimformerError(f"factorize: bad pattern {p!r}: {e}") from e
        return self


def choose_ranks(model: nn.Module, cfg: Factorize) -> tuple[dict[str, int], dict[str, int]]:
    """(ranks of the layers to factorize, ranks skipped because they would not save parameters)."""
    names = select_layers(model, cfg.parts, cfg.include, cfg.exclude)
    check(bool(names), "factorize: no Linear layer matches the selection")
    mods = dict(model.named_modules())
    layers: dict[str, nn.Linear] = {n: mods[n] for n in names}  # type: ignore[misc]
    if cfg.rank is not None:
        ranks = {n: cfg.rank for n in names}
    elif cfg.energy is not None:
        ranks = {n: energy_rank(spectrum(m), cfg.energy) for n, m in layers.items()}
    elif cfg.allocation == "spectrum":
        ranks = allocate_by_spectrum(layers, cfg.ratio or 0.0)
    else:
        ranks = {n: ratio_rank(m, cfg.ratio or 0.0) for n, m in layers.items()}
    for n, r in ranks.items():
        check_rank(layers[n], r, n)
    keep = {n: r for n, r in ranks.items() if r < break_even(layers[n])}
    skipped = {n: r for n, r in ranks.items() if n not in keep}
    return keep, skipped


@implements(Factorize)
def factorize(model: nn.Module, cfg: Factorize, ctx: Context) -> nn.Module:
    before = num_params(model)
    ranks, skipped = choose_ranks(model, cfg)
    if skipped:
        console.print(f"[yellow]factorize: {len(skipped)} layer(s) left dense, their rank would not save "
                      f"parameters (rank >= in*out/(in+out)): {', '.join(f'{n}@{r}' for n, r in skipped.items())}")
    factorize_linears(model, ranks)
    ctx.note("ranks", ranks)
    ctx.note("skipped_no_saving", skipped)
    ctx.note("params_before_after", [before, num_params(model)])
    return model
