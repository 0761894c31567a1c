"""One small file per architecture family: a `Family` table registered with `register_family`."""
from . import bart, bert, distilbert, gpt2, llama, t5  # noqa: F401
