"""The mechanics of learned-score movement pruning: score tensors, binarizers, the masked-weight
parametrization, the sparsity schedule and folding the masks into the weights.

Rules followed (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning", and its reference
code, transformers `examples/research_projects/movement-pruning`: `emmental/modules/binarizer.py`,
`masked_run_glue.py`):

- every pruned Linear computes with W' = W * M(S); S is a score tensor initialised to 0 (`--mask_init constant
  --mask_scale 0`) and trained with the model (our departure: the step's default `score_init: magnitude`
  starts S at the weights' magnitude, `magnitude_init`; zeros is the paper's start);
- hard movement: M = TopK(S), the top `keep` fraction of each score tensor (`TopKBinarizer`: top-k per matrix);
  soft movement: M = 1[sigmoid(S) > tau] (`ThresholdBinarizer`, at least 0.5% of each matrix kept) plus the L1
  regularizer lambda * mean(sigmoid(S)) averaged over the matrices (`regularization(mode="l1")`);
- the straight-through estimator: the binarizers pass the gradient through unchanged, so dL/dS = dL/dW' * W
  and with plain SGD S accumulates -sum_t W * dL/dW (the paper's eq. 4/5: weights moving away from zero gain
  score);
- magnitude: M = TopK(|W|) per matrix (`MagnitudeBinarizer`), nothing learned;
- schedule (`schedule_threshold`): keep everything for the warm-up, then the kept fraction follows
  keep_t = keep_f + (1 - keep_f)(1 - x)^3, then hold keep_f for the cool-down; lambda_t grows with the pruned
  fraction (`regu_lambda = final_lambda * threshold / final_threshold`).

Our one departure, stated where it is used: soft movement's tau is set every step as the global value that keeps
the scheduled fraction of all included weights (the reference code's `--global_topk` threshold), instead of a
fixed tau whose sparsity comes out of lambda: this lets every method be compared at the same sparsity. In block
mode it may instead be set per kind (`by_kind`): heads and FFN neurons each keep that fraction of their own
weights across all layers, the allocation prune_heads + prune_ffn make at the same keep.

Block mode (Lagunas et al. 2021, "Block Pruning For Faster Transformers"; huggingface/nn_pruning): one score per
attention head (its query/key/value rows and output-projection columns, tied; a whole key/value group under
grouped-query attention) and one per FFN neuron (its up/gate rows and down column, tied), so pruned units are
whole heads and neurons and can be removed physically.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

HOLDER = "sf_movement_scores"  # the model attribute holding every score tensor once (checkpointed with it)
VARIANTS = ("hard", "soft", "magnitude")


def keep_fraction(step: int, total: int, warmup: int, cooldown: int, final_keep: float) -> float:
    """The fraction of weights kept at optimizer step `step` (0-based) of `total`: 1 during the first `warmup`
    steps, keep_f during the last `cooldown`, cubic in between (the reference code's schedule_threshold)."""
    if step < warmup or total <= 0:
        return 1.0
    if step >= total - cooldown:
        return final_keep
    span = max(1, total - warmup - cooldown)
    x = (step - warmup) / span
    return final_keep + (1.0 - final_keep) * (1.0 - x) ** 3


def kept_count(keep: float, n: int) -> int:
    """Units kept out of n for a kept fraction (at least one)."""
    return max(1, min(n, round(keep * n)))


class TopKSTE(torch.autograd.Function):
    """1 for the kept_count(keep, n) highest scores, 0 elsewhere; gradient passed straight through."""

    @staticmethod
    def forward(ctx: object, scores: torch.Tensor, keep: float) -> torch.Tensor:  # type: ignore[override]
        if keep >= 1.0:
            return torch.ones_like(scores)
        flat = scores.detach().flatten()
        mask = torch.zeros_like(flat)
        mask[torch.topk(flat, kept_count(keep, flat.numel()), sorted=False).indices] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class ThresholdSTE(torch.autograd.Function):
    """1 where scores > tau (at least 0.5% of the tensor kept, as the reference code); straight-through gradient."""

    @staticmethod
    def forward(ctx: object, scores: torch.Tensor, tau: float) -> torch.Tensor:  # type: ignore[override]
        mask = (scores.detach() > tau).to(scores.dtype)
        n_min = int(0.005 * scores.numel()) + 1
        if mask.sum() < n_min:
            return TopKSTE.forward(ctx, scores, n_min / scores.numel())
        return mask

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


@dataclass
class Group:
    """One score tensor and the Linear weights it masks: (module name, expand) with expand turning the binary
    score mask into that weight's mask shape. `weights` is how many weights one score covers."""

    key: str
    shape: tuple[int, ...]
    targets: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]
    weights: int = 1
    unit: str | None = None  # block mode: the attention / FFN unit it prunes
    kind: str = "weights"    # weights | heads | ffn


@dataclass
class Plan:
    """Shared state of one movement-pruning run: variant, score groups, the current kept fraction and tau."""

    variant: str
    groups: dict[str, Group]
    scores: nn.ParameterDict | None = None
    keep: float = 1.0
    by_kind: bool = False  # soft: one tau per group kind (heads, ffn) instead of one over all scores
    tau: dict[str, float] = field(default_factory=dict)  # group kind (or "all") -> threshold
    modules: dict[str, nn.Module] = field(default_factory=dict)

    def mask(self, group: Group, weight: torch.Tensor) -> torch.Tensor:
        """The binary mask of `group` at the current keep (a score-shaped tensor, STE-differentiable)."""
        if self.variant == "magnitude":
            return TopKSTE.apply(weight.detach().abs(), self.keep)
        assert self.scores is not None
        s = self.scores[group.key]
        if self.variant == "soft":
            if self.keep >= 1.0:
                return TopKSTE.apply(s, 1.0)
            return ThresholdSTE.apply(s, self.tau[group.kind if self.by_kind else "all"])
        return TopKSTE.apply(s, self.keep)

    def set_keep(self, keep: float) -> None:
        """Move to a new kept fraction; soft movement recomputes its global tau (one per kind if by_kind)."""
        self.keep = keep
        if self.variant == "soft" and keep < 1.0:
            kinds = {g.kind for g in self.groups.values()} if self.by_kind else {None}
            self.tau = {k or "all": global_threshold(self, keep, k) for k in kinds}

    def regularizer(self) -> torch.Tensor:
        """L1 of sigmoid(S), mean per score tensor averaged over tensors (the reference's `regularization`)."""
        assert self.scores is not None
        vals = [torch.sigmoid(s).mean() for s in self.scores.values()]
        return torch.stack(vals).mean()


def global_threshold(plan: Plan, keep: float, kind: str | None = None) -> float:
    """The score tau such that the groups' scores above it cover `keep` of all their weights (each score counted
    by the weights it masks; ties above tau); only the groups of `kind` if given."""
    assert plan.scores is not None
    groups = [g for g in plan.groups.values() if kind is None or g.kind == kind]
    flat = torch.cat([plan.scores[g.key].detach().flatten() for g in groups])
    if all(g.weights == 1 for g in groups):
        k = kept_count(keep, flat.numel())
        return float(torch.topk(flat, k, sorted=True).values[-1]) - 1e-12 if k < flat.numel() else float("-inf")
    w = torch.cat([torch.full((plan.scores[g.key].numel(),), float(g.weights)) for g in groups])
    order = torch.argsort(flat, descending=True)
    cum = torch.cumsum(w[order], 0)
    i = int(torch.searchsorted(cum, keep * float(cum[-1])).clamp(max=len(order) - 1))
    return float(flat[order[i]]) - 1e-12


class MaskedWeight(nn.Module):
    """Parametrization W -> W * expand(mask(S)). The plan (and its scores) is held by reference, not as a
    submodule, so every score tensor is saved once, on the model."""

    def __init__(self, plan: Plan, group: Group, expand: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "expand", expand)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.expand(self.plan.mask(self.group, w)).to(w.dtype)


@torch.no_grad()
def magnitude_init(group: Group, mods: dict[str, nn.Module]) -> torch.Tensor:
    """Scores that rank like magnitude pruning: the L2 norm of the weights each score masks (|W| for one weight;
    a head's or neuron's rows and columns in block mode), divided by their mean so every tensor starts at mean 1."""
    sq = torch.zeros(group.shape).flatten()
    index = torch.arange(sq.numel(), dtype=torch.float64).view(group.shape)
    for name, expand in group.targets:
        w = mods[name].weight.detach().float()
        idx = expand(index).expand_as(w).reshape(-1).long()  # which score masks each weight
        sq.index_add_(0, idx, w.pow(2).reshape(-1))
    norm = sq.sqrt().view(group.shape)
    return norm / norm.mean().clamp_min(1e-12)


def attach(model: nn.Module, plan: Plan, init: str | dict[str, torch.Tensor] = "zeros") -> None:
    """Register the score tensors on the model (initialised to 0 as in the paper, by `magnitude_init`, or to
    given tensors {group key: scores}) and parametrize every target weight with its mask."""
    mods = dict(model.named_modules())
    if plan.variant != "magnitude":
        first = dict(init) if isinstance(init, dict) else {
            g.key: magnitude_init(g, mods) if init == "magnitude" else torch.zeros(g.shape)
            for g in plan.groups.values()}
        plan.scores = nn.ParameterDict({k: nn.Parameter(v) for k, v in first.items()})
        model.add_module(HOLDER, plan.scores)
    for g in plan.groups.values():
        for name, expand in g.targets:
            plan.modules[name] = mods[name]
            parametrize.register_parametrization(mods[name], "weight", MaskedWeight(plan, g, expand),
                                                 unsafe=True)


@torch.no_grad()
def fold(model: nn.Module, plan: Plan) -> None:
    """Replace every parametrized weight by W * M at the plan's current keep and drop the scores: the model is
    an ordinary dense model with zeros."""
    for m in plan.modules.values():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    if hasattr(model, HOLDER):
        delattr(model, HOLDER)


@torch.no_grad()
def unit_masks(plan: Plan) -> dict[str, torch.Tensor]:
    """Block mode: the boolean kept-mask of every head / neuron score group at the current keep."""
    out = {}
    for g in plan.groups.values():
        if g.kind != "weights":
            w = plan.modules[g.targets[0][0]].parametrizations.weight.original
            out[g.key] = plan.mask(g, w).bool()
    return out
