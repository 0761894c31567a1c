"""`python -m slimformer ...` (and `torchrun --nproc_per_node N -m slimformer finetune ...`)."""
from .entry import console

console()
