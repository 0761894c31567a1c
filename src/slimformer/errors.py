"""User-facing errors: the CLI prints them as one line and exits non-zero."""
from __future__ import annotations


class SlimformerError(Exception):
    """An error caused by the user's input (model, data, recipe, arguments), not a bug."""


def check(condition: bool, message: str) -> None:
    """Raise SlimformerError(message) unless condition holds."""
    if not condition:
        raise SlimformerError(message)
