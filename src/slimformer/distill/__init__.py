"""Knowledge distillation: loss terms, layer maps, student construction, task-specific and general steps,
sentence embeddings, PET."""
from .embeddings import DistillEmbeddings, distill_embeddings
from .layer_map import build_layer_map, describe_layer_map
from .mlm import DistillGeneral, distill_general
from .pet import Pet, pet
from .step import Distill, distill
from .student import MakeStudent, make_student

__all__ = ["DistillEmbeddings", "distill_embeddings",
           "build_layer_map", "describe_layer_map", "DistillGeneral", "distill_general", "Distill", "distill",
           "MakeStudent", "make_student", "Pet", "pet"]
