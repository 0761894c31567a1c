"""The `pet` recipe step: PET (Jeon & Kang, PLoS ONE 2023) on an encoder-decoder, in one step.

Design: one step for the chain, three reusable parts with their own configs and tests.

1. student: a fresh model of the teacher's family with the sizes of `student` (width, per-stack layers, FFN
   widths, heads; the family table names the config keys: `models/resize.py`), embeddings copied when the
   widths match; or, with `student: null`, the current model (e.g. built by `make_student` + `share_pairs`).
2. share (`share_pairs`' config, `share/pet.py`): layer pairs share weights, the encoder's second pass with
   Q and K swapped, the decoder's cross-attention Query tied to its self-attention Query; pairs given or
   searched. `share: null` leaves the student unshared.
3. warmup (`distill/warmup.py`): `warmup.epochs` on the teacher's 4-class token labels, through the
   probability mapping (PET) or a separate 4-way head (ablation). `warmup: null` skips it.
4. distillation (`distill/pet_loss.py`): ce (label-smoothed) + kd (temperature T) + hidden (both stacks,
   projected to the teacher's width) for `epochs`.

The teacher is the model as it entered the recipe, or `teacher:` (a model directory), as for `distill`.
The ablations of the paper are field changes: `warmup: null`; `warmup: {head: linear}`; `share: null` with
2+2 layers (the same storage, unshared) or 4+4 (plain distillation, with `hidden: 0`); `share: {swap_qk:
false}`. HF Marian/BART keep one width for both stacks, so PET's 320-wide encoder / 240-wide decoder
becomes one `width`.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Union

import torch
from pydantic import Field
from torch import nn

from ..errors import check
from ..models import get_adapter, num_params
from ..share.pet import SharePairs, check_encoder_decoder, check_pairs, share_pairs
from ..steps import Context, StepConfig, implements
from .pet_loss import PetDistillTrainer, attach_stack_projections, detach_stack_projections, stack_layer_maps
from .trainer import IndexedDataset, LossWeights
from .warmup import PetWarmup, warm_up


class PetStudent(StepConfig):
    """The student's sizes (unset: the teacher's)."""

    width: int | None = Field(None, ge=1, description="model width (d_model)")
    encoder_layers: int = Field(4, ge=1, description="encoder layers computed (PET: 4, stored as 2 pairs)")
    decoder_layers: int = Field(4, ge=1, description="decoder layers computed")
    encoder_ffn: int | None = Field(None, ge=1)
    decoder_ffn: int | None = Field(None, ge=1)
    heads: int | None = Field(None, ge=1, description="attention heads in both stacks")


class Pet(StepConfig):
    """PET for encoder-decoders: build a shared narrower student, warm it up, distil it (Jeon & Kang 2023).

    The warm-up learns the teacher's 4-class token labels; the distillation mixes label-smoothed CE, soft
    targets and hidden-state matching."""

    step: ClassVar[str] = "pet"
    needs_data: ClassVar[bool] = True
    student: PetStudent | None = Field(None, description="sizes of a fresh student; null: the current model")
    share: SharePairs | None = Field(default_factory=SharePairs, description="share_pairs settings; null: none")
    warmup: PetWarmup | None = Field(default_factory=PetWarmup, description="warm-up settings; null: none")
    teacher: str | None = Field(None, description="teacher model directory; default: the model before the recipe")
    ce: float = Field(0.9, ge=0, description="label-smoothed cross-entropy on the gold tokens")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    kd: float = Field(0.1, ge=0, description="soft-target KL at temperature T (scaled by T^2)")
    temperature: float = Field(10.0, gt=0)
    hidden: float = Field(50.0, ge=0, description="hidden-state MSE over both stacks' layer maps")
    layer_map: Union[str, list[list[int]]] = Field("uniform", description="uniform | skip | last (per stack)")
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_steps: int = -1
    max_train_examples: int | None = Field(None, ge=1)
    save_steps: int | None = Field(None, ge=1)

    def preflight(self, model: nn.Module, task: Any) -> None:
        check_encoder_decoder(model, self.step)
        check(task is None or task.distill_target == "token_logits",
              f"pet: distils a translation (sequence-to-sequence) model; task {getattr(task, 'name', '?')} is not one")
        check(self.ce or self.kd or self.hidden, "pet: every loss weight is 0; set at least one of ce, kd, hidden")
        check(isinstance(self.layer_map, str), "pet: layer_map is a strategy (uniform, skip, last) used per stack")
        layers = ({"encoder": self.student.encoder_layers, "decoder": self.student.decoder_layers}
                  if self.student is not None else
                  {s: len(get_adapter(model).layers(model, s)) for s in ("encoder", "decoder")})
        for stack, n in layers.items():
            spec = getattr(self.share, stack) if self.share is not None else None
            if isinstance(spec, list):
                check_pairs(spec, n, stack)

    def weights(self) -> LossWeights:
        return LossWeights(kd=self.kd, ce=self.ce, hidden=self.hidden, temperature=self.temperature)


def build_student(teacher: nn.Module, sizes: PetStudent, seed: int = 42) -> nn.Module:
    """A randomly initialised model of the teacher's class at the given sizes (embeddings copied when the
    width is the teacher's); the teacher is untouched."""
    from ..models.resize import resized_config
    from .student import check_fits_in_memory

    stacks = {"encoder": {"layers": sizes.encoder_layers, "ffn": sizes.encoder_ffn, "heads": sizes.heads},
              "decoder": {"layers": sizes.decoder_layers, "ffn": sizes.decoder_ffn, "heads": sizes.heads}}
    cfg = resized_config(teacher.config, sizes.width, {k: {f: v for f, v in d.items() if v is not None}
                                                      for k, d in stacks.items()})
    check_fits_in_memory(type(teacher), cfg, "pet: student")
    torch.manual_seed(seed)
    student = type(teacher)(cfg)
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    ad = get_adapter(teacher)
    for s_emb, t_emb in zip(ad.embedding_modules(student), ad.embedding_modules(teacher)):
        mine = s_emb.state_dict()
        s_emb.load_state_dict({k: v for k, v in t_emb.state_dict().items() if k in mine and mine[k].shape == v.shape},
                              strict=False)
    return student.eval()


def pet(model: nn.Module, teacher: nn.Module, cfg: Pet, ctx: Context) -> tuple[nn.Module, dict[str, Any]]:
    """Run the PET chain; returns (student, stats). The teacher and the input model are not modified."""
    from ..train import TrainConfig, run_training, set_seed, train_dataset, training_args

    task = ctx.require_task(cfg.step)
    cfg.preflight(model, task)
    check_encoder_decoder(teacher, "pet (teacher)")
    stats: dict[str, Any] = {"teacher_params": num_params(teacher)}
    student = build_student(teacher, cfg.student, ctx.seed) if cfg.student is not None else model
    if cfg.share is not None:
        sub = Context(tokenizer=ctx.tokenizer, task=task, work_dir=ctx.work_dir / "share", seed=ctx.seed,
                      max_len=ctx.max_len)
        student, stats["share"] = share_pairs(student, cfg.share, sub)
    stats["student_params"] = num_params(student)
    base = train_dataset(ctx.tokenizer, task, TrainConfig(max_len=ctx.max_len, seed=ctx.seed,
                                                          max_train_examples=cfg.max_train_examples))
    collate = task.collator(ctx.tokenizer, student)
    if cfg.warmup is not None:
        stats["warmup"] = warm_up(student, teacher, base, collate, cfg.warmup, ctx.work_dir / "warmup",
                                  cfg.batch_size, ctx.max_len, ctx.seed, ctx.resume)
    set_seed(ctx.seed)
    maps = stack_layer_maps(student, teacher, cfg.layer_map)
    n_proj = attach_stack_projections(student, teacher, ctx.seed) if cfg.hidden else 0
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_len=ctx.max_len, seed=ctx.seed,
                       warmup_ratio=cfg.warmup_ratio, max_steps=cfg.max_steps, save_steps=cfg.save_steps)
    out_dir = ctx.work_dir / "distill"
    args = training_args(tcfg, out_dir, len(base))
    args.remove_unused_columns = False
    trainer = PetDistillTrainer(model=student, args=args, train_dataset=IndexedDataset(base), data_collator=collate,
                                teacher=teacher, weights=cfg.weights(), stack_maps=maps,
                                label_smoothing=cfg.label_smoothing)
    try:
        stats["distill"] = run_training(trainer, out_dir, ctx.resume)
    finally:
        detach_stack_projections(student)
    student.eval()
    stats["distill"].update({"layer_maps": {k: [list(p) for p in v] for k, v in maps.items()},
                             "projections": n_proj, "weights": {k: v for k, v in vars(cfg.weights()).items() if v}})
    return student, stats


@implements(Pet)
def pet_step(model: nn.Module, cfg: Pet, ctx: Context) -> nn.Module:
    from ..models import load

    teacher = load(cfg.teacher)[0] if cfg.teacher else ctx.original()
    student, stats = pet(model, teacher, cfg, ctx)
    for k, v in stats.items():
        ctx.note(f"pet_{k}", v)
    return student
