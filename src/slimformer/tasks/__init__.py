"""Tasks: data loaders and metrics."""
from .base import Example, TaskData
from .classification import LOADERS, load
from .metrics import compute as compute_metrics

__all__ = ["Example", "TaskData", "LOADERS", "load", "compute_metrics"]
