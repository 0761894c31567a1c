"""The distillation Trainer: an HF Trainer whose loss mixes the weighted terms of `losses.py`.

The teacher runs once per batch in eval mode under `torch.no_grad` (or its logits come from a disk cache).
Learned projections (student width -> teacher width) are attached to the student as `sf_distill_proj`
during training, so the optimizer, checkpoints and resume include them; `detach_projections` removes them
afterwards, so they are never saved with the student.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..checkpoints import AtomicCheckpoints
from ..errors import SlimformerError
from . import losses as L
from .layer_map import Pairs

PROJ = "sf_distill_proj"
INDEX = "sf_index"


@dataclass
class LossWeights:
    """Weights of the loss terms (0 switches a term off) and the softmax temperature of the kd term."""

    kd: float = 1.0
    ce: float = 0.0
    cos: float = 0.0
    hidden: float = 0.0
    attention: float = 0.0
    pkd: float = 0.0
    temperature: float = 2.0

    @property
    def needs_hidden(self) -> bool:
        return bool(self.cos or self.hidden or self.pkd)

    @property
    def needs_teacher_states(self) -> bool:
        return self.needs_hidden or bool(self.attention)


def _key(layer: int) -> str:
    return "emb" if layer == -1 else str(layer)


def attach_projections(student: nn.Module, teacher: nn.Module, pairs: Pairs, n_student: int, seed: int,
                       weights: LossWeights) -> int:
    """Add a Linear per student layer used by a hidden-state term when widths differ; returns how many."""
    ds, dt = student.config.hidden_size, teacher.config.hidden_size
    if ds == dt:
        return 0
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    used = {s for s, _ in pairs} if weights.hidden else set()
    used |= {s for s, _ in pairs if s >= 0} if weights.pkd else set()
    used |= {n_student - 1} if weights.cos else set()
    if not used:
        return 0
    layers = sorted(used)
    proj = nn.ModuleDict({_key(s): nn.Linear(ds, dt) for s in layers})
    torch.random.set_rng_state(rng)
    student.add_module(PROJ, proj)
    # project inside the student's forward (a hook), so DDP sees the projections as part of the model's graph
    proj.sf_hook = student.register_forward_hook(_project_hook)
    return len(proj)


def _project_hook(module: nn.Module, args: Any, output: Any) -> Any:
    hidden = getattr(output, "hidden_states", None)
    proj = getattr(module, PROJ, None)
    if hidden is None or proj is None:
        return output
    out = dict(output)  # a plain dict: DDP rebuilds outputs by type and ModelOutput rejects new fields
    for key, lin in proj.items():
        out[f"{PROJ}_{key}"] = lin(hidden[0 if key == "emb" else int(key) + 1])
    return out


def detach_projections(student: nn.Module) -> None:
    proj = getattr(student, PROJ, None)
    if proj is not None:
        proj.sf_hook.remove()
        delattr(student, PROJ)


class IndexedDataset(torch.utils.data.Dataset):
    """Adds each example's position (for the teacher-logit cache)."""

    def __init__(self, base: Any):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], INDEX: i}


def _fingerprint(dataset: Any) -> str:
    h = hashlib.sha256()
    for i in range(len(dataset)):
        h.update(repr(dataset[i]["input_ids"]).encode())
    return h.hexdigest()[:16]


def teacher_logits_cache(teacher: nn.Module, dataset: Any, collate: Any, path: Path,
                         batch_size: int = 64) -> torch.Tensor:
    """Teacher logits for every example of dataset, computed once and stored in path (safetensors)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..train import is_main_process

    fp = _fingerprint(dataset)
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("fingerprint") == fp:
                    return f.get_tensor("logits")
        except Exception as e:  # a truncated or garbled cache (SafetensorError): computed again below
            from ..errors import one_line
            from ..progress import console

            console.print(f"[yellow]warning: ignoring the unreadable teacher cache {path} ({one_line(e)})[/]")
    teacher.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            feats = [{k: v for k, v in dataset[i].items() if k not in ("labels", INDEX)}
                     for i in range(start, min(start + batch_size, len(dataset)))]
            out.append(teacher(**collate(feats)).logits.float())
    logits = torch.cat(out)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"logits": logits.contiguous()}, str(tmp), metadata={"fingerprint": fp})
        tmp.replace(path)
    return logits


class DistillTrainer(AtomicCheckpoints, Trainer):
    """Trainer with a distillation loss; pass teacher, weights, layer_map (and optionally cached logits)."""

    target = "logits"  # logits (softmax KL) | token_logits (per-token KL) | regression (MSE)
    shift_labels = False  # causal LM: position t predicts label t + 1

    def __init__(self, *args: Any, teacher: nn.Module, weights: LossWeights, layer_map: Pairs,
                 cached_logits: torch.Tensor | None = None, target: str = "logits", shift_labels: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.target, self.shift_labels = target, shift_labels
        self.teacher = teacher.eval()  # runs under no_grad; its requires_grad flags are left alone (a later
        # make_student(teacher) copy must stay trainable)
        self.weights = weights
        self.layer_map = layer_map
        self.cached_logits = cached_logits
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean
        self._terms: dict[str, float] = defaultdict(float)
        self._term_steps = 0

    def _teacher_forward(self, inputs: dict[str, Any], index: torch.Tensor | None) -> Any:
        w = self.weights
        if not w.kd and not w.needs_teacher_states:
            return {"logits": None}  # hard labels only: plain fine-tuning on the same engine, no teacher cost
        if self.cached_logits is not None and not w.needs_teacher_states:
            if index is None:
                raise SlimformerError(f"distill: the teacher cache needs the '{INDEX}' column in every batch")
            return {"logits": self.cached_logits[index.cpu()].to(inputs["input_ids"].device)}
        self.teacher.to(inputs["input_ids"].device)
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=w.needs_hidden, output_attentions=bool(w.attention))
        return {"logits": getattr(out, "logits", None), "hidden_states": getattr(out, "hidden_states", None),
                "attentions": getattr(out, "attentions", None)}

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        index = inputs.pop(INDEX, None)
        labels = inputs.pop("labels", None)
        w = self.weights
        s_out = model(**inputs, output_hidden_states=w.needs_hidden, output_attentions=bool(w.attention))
        t_out = self._teacher_forward(inputs, index)
        terms = self.loss_terms(model, s_out, t_out, labels, inputs.get("attention_mask"))
        loss = sum(getattr(w, k) * v for k, v in terms.items())
        for k, v in terms.items():
            self._terms[k] += float(v.detach())
        self._term_steps += 1
        return (loss, s_out) if return_outputs else loss

    def loss_terms(self, model: nn.Module, s_out: Any, t_out: dict[str, Any], labels: torch.Tensor | None,
                   mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The unweighted value of every term whose weight is non-zero."""
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        s_logits = s_out.get("logits")
        token_mask = labels.ne(-100) if labels is not None and labels.dim() == 2 else None  # MLM: masked tokens
        if w.kd:
            if s_logits is None or t_out["logits"] is None or s_logits.shape[-1] != t_out["logits"].shape[-1]:
                raise SlimformerError("distill: kd needs student and teacher with the same output head "
                                      "(set kd: 0 to distil hidden states only)")
            if self.target == "regression":
                terms["kd"] = torch.nn.functional.mse_loss(s_logits.float(), t_out["logits"].float())
            else:
                terms["kd"] = L.kd_loss(s_logits, t_out["logits"], w.temperature, token_mask)
        if w.ce:
            if labels is None or s_logits is None or (token_mask is not None and s_logits.dim() != 3):
                raise SlimformerError("distill: ce needs gold labels and a student head that predicts them")
            if self.target == "regression":
                terms["ce"] = torch.nn.functional.mse_loss(s_logits.float().squeeze(-1), labels.float())
            elif self.shift_labels:
                terms["ce"] = L.hard_ce(s_logits[:, :-1], labels[:, 1:])
            else:
                terms["ce"] = L.hard_ce(s_logits, labels)
        if w.needs_teacher_states:
            terms.update(self._state_terms(model, s_out, t_out, mask))
        return terms

    def _state_terms(self, model: nn.Module, s_out: Any, t_out: dict[str, Any],
                     mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        w = self.weights

        def project(s: int) -> torch.Tensor:
            """Student layer s's hidden states at the teacher's width (projected in the forward hook)."""
            key = f"{PROJ}_{_key(s)}"
            return s_out[key] if key in s_out else s_out["hidden_states"][s + 1]

        terms: dict[str, torch.Tensor] = {}
        zero = s_out["logits"].sum() * 0.0 if s_out.get("logits") is not None else torch.zeros(())
        if w.needs_hidden:
            s_h, t_h = s_out["hidden_states"], t_out["hidden_states"]
            last_s = len(s_h) - 2
            if w.cos:
                terms["cos"] = L.cosine_loss(project(last_s), t_h[-1], mask)
            if w.hidden:
                terms["hidden"] = sum((L.hidden_mse(project(s), t_h[t + 1], mask)
                                       for s, t in self.layer_map), zero) / len(self.layer_map)
            if w.pkd:
                pairs = [(s, t) for s, t in self.layer_map if s >= 0]
                terms["pkd"] = sum((L.pkd_loss(project(s)[:, 0], t_h[t + 1][:, 0])
                                    for s, t in pairs), zero) / max(1, len(pairs))
        if w.attention:
            s_a, t_a = s_out.get("attentions"), t_out["attentions"]
            if not s_a or not t_a:
                raise SlimformerError("distill: attention maps unavailable (the eager attention implementation "
                                      "is needed)")
            pairs = [(s, t) for s, t in self.layer_map if s >= 0]
            terms["attention"] = sum((L.attention_loss(s_a[s], t_a[t], mask) for s, t in pairs), zero) \
                / max(1, len(pairs))
        return terms

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._term_steps and "loss" in logs:
            for k, v in self._terms.items():
                logs[f"loss_{k}"] = round(v / self._term_steps, 5)
            self._terms.clear()
            self._term_steps = 0
        super().log(logs, start_time)
