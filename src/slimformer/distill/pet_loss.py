"""PET's distillation loss for encoder-decoders, on the distillation Trainer:

    loss = ce * CE_smoothed(student, gold) + kd * KL_T(teacher || student) * T^2 + hidden * H

PET's weights: ce 0.9 (label smoothing 0.1), kd 0.1 at temperature 10, hidden 50. H is the mean, over the
layer-map pairs of both stacks (encoder states on real source tokens, decoder states on real target tokens),
of the MSE between a student layer's output and its teacher layer's output (`losses.hidden_mse`). A student
narrower than its teacher is first projected to the teacher's width by a learned Linear per stack (TinyBERT's
W_h), attached for the run and removed afterwards, so never saved with the student. The KD term is the
project's `kd_loss` (scaled by T^2, Hinton et al., so its gradient does not shrink with T).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SlimformerError
from . import losses as L
from .layer_map import Pairs, build_layer_map
from .trainer import DistillTrainer

PROJ = "sf_pet_proj"
STACKS = ("encoder", "decoder")


def stack_layer_maps(student: nn.Module, teacher: nn.Module, spec: Any = "uniform") -> dict[str, Pairs]:
    """{stack: [(student layer, teacher layer), ...]} for both stacks (the string strategies of `layer_map`)."""
    from ..models import get_adapter

    ad_s, ad_t = get_adapter(student), get_adapter(teacher)
    return {s: build_layer_map(spec, len(ad_s.layers(student, s)), len(ad_t.layers(teacher, s))) for s in STACKS}


def attach_stack_projections(student: nn.Module, teacher: nn.Module, seed: int) -> int:
    """A Linear (student width -> teacher width) per stack when the widths differ; returns how many."""
    ds, dt = student.config.hidden_size, teacher.config.hidden_size
    if ds == dt:
        return 0
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    proj = nn.ModuleDict({s: nn.Linear(ds, dt) for s in STACKS})
    torch.random.set_rng_state(rng)
    student.add_module(PROJ, proj)
    proj.sf_hook = student.register_forward_hook(_project_hook)  # inside forward: DDP sees the projections
    return len(proj)


def _project_hook(module: nn.Module, args: Any, output: Any) -> Any:
    proj = getattr(module, PROJ, None)
    if proj is None or getattr(output, "encoder_hidden_states", None) is None:
        return output
    out = dict(output)
    for s in STACKS:
        out[f"{PROJ}_{s}"] = tuple(proj[s](h) for h in output[f"{s}_hidden_states"])
    return out


def detach_stack_projections(student: nn.Module) -> None:
    proj = getattr(student, PROJ, None)
    if proj is not None:
        proj.sf_hook.remove()
        delattr(student, PROJ)


def seq2seq_hidden_loss(s_out: Any, t_out: Any, maps: dict[str, Pairs], masks: dict[str, torch.Tensor | None]
                        ) -> torch.Tensor:
    """Mean hidden-state MSE over both stacks' layer-map pairs (student states projected when present)."""
    total, n = None, 0
    for s in STACKS:
        s_h = s_out[f"{PROJ}_{s}"] if f"{PROJ}_{s}" in s_out else s_out[f"{s}_hidden_states"]
        t_h = t_out[f"{s}_hidden_states"]
        for a, b in maps[s]:
            term = L.hidden_mse(s_h[a + 1], t_h[b + 1], masks[s])
            total = term if total is None else total + term
            n += 1
    if total is None:
        raise SlimformerError("pet: the layer map is empty")
    return total / n


class PetDistillTrainer(DistillTrainer):
    """DistillTrainer with PET's terms for encoder-decoders: label-smoothed ce, token kd, both stacks' hidden."""

    def __init__(self, *args: Any, stack_maps: dict[str, Pairs], label_smoothing: float = 0.1, **kwargs: Any):
        super().__init__(*args, layer_map=[], target="token_logits", **kwargs)
        self.stack_maps = stack_maps
        self.label_smoothing = label_smoothing

    def _teacher_forward(self, inputs: dict[str, Any], index: torch.Tensor | None) -> Any:
        w = self.weights
        if not w.kd and not w.hidden:
            return {"logits": None}
        self.teacher.to(inputs["input_ids"].device)
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=bool(w.hidden))
        return {"logits": out.logits, "encoder_hidden_states": out.encoder_hidden_states,
                "decoder_hidden_states": out.decoder_hidden_states}

    def loss_terms(self, model: nn.Module, s_out: Any, t_out: dict[str, Any], labels: torch.Tensor | None,
                   mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        w = self.weights
        if labels is None:
            raise SlimformerError("pet: distillation needs the gold target tokens (labels)")
        token_mask = labels.ne(-100)
        s_logits = s_out["logits"]
        terms: dict[str, torch.Tensor] = {}
        if w.ce:
            terms["ce"] = L.hard_ce(s_logits, labels, self.label_smoothing)
        if w.kd:
            if s_logits.shape[-1] != t_out["logits"].shape[-1]:
                raise SlimformerError("pet: kd needs student and teacher with the same vocabulary")
            terms["kd"] = L.kd_loss(s_logits, t_out["logits"], w.temperature, token_mask)
        if w.hidden:
            terms["hidden"] = seq2seq_hidden_loss(s_out, t_out, self.stack_maps,
                                                  {"encoder": mask, "decoder": token_mask})
        return terms
