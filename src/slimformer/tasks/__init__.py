"""Tasks: one module per kind (classification, similarity, translation, language modelling) and `load`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import SlimformerError
from .base import Example, Task
from .classification import ClassificationTask, TaskData, load_cola, load_mrpc, load_sst2, load_table_task
from .language_modeling import LanguageModelingTask, load_text
from .metrics import compute as compute_metrics
from .similarity import SimilarityTask, load_similarity
from .translation import TranslationTask, load_translation

LOADERS: dict[str, Callable[..., Task]] = {
    "sst2": load_sst2,
    "cola": load_cola,
    "mrpc": load_mrpc,
    "classification": load_table_task,
    "stsb": lambda data, **o: load_similarity(data, **{"name": "stsb", **o}),
    "similarity": load_similarity,
    "multi30k": lambda data, **o: load_translation(data, **{"name": "multi30k", "src": "en", "tgt": "de",
                                                            **{k: v for k, v in o.items() if v is not None}}),
    "translation": load_translation,
    "wikitext2": lambda data, **o: load_text(data, **{"name": "wikitext2", **o}),
    "lm": load_text,
    "languagemodeling": load_text,
}
KINDS = {"classification": "sst2, cola, mrpc, classification", "similarity": "stsb, similarity",
         "translation": "multi30k, translation", "language_modeling": "wikitext2, lm"}


def load(task: str, data: str | Path, **options: Any) -> Task:
    """Load a task by name (see LOADERS); options are the loader's keyword arguments (None values ignored)."""
    key = str(task).lower().replace("-", "").replace("_", "")
    if key not in LOADERS:
        raise SlimformerError(f"unknown task '{task}' (known: {', '.join(LOADERS)})")
    opts = {k: v for k, v in options.items() if v is not None}
    try:
        return LOADERS[key](data, **opts)
    except TypeError as e:
        raise SlimformerError(f"task {task}: {str(e).splitlines()[0]}") from e
    except UnicodeDecodeError as e:
        raise SlimformerError(f"task {task}: {data} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except RecursionError as e:
        raise SlimformerError(f"task {task}: a record in {data} is nested too deeply") from e


__all__ = ["Example", "Task", "TaskData", "ClassificationTask", "SimilarityTask", "TranslationTask",
           "LanguageModelingTask", "LOADERS", "KINDS", "load", "compute_metrics"]
