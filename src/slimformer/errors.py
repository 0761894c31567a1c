"""User-facing errors: the CLI prints them as one line and exits non-zero."""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"^<class '(?:[\w]+\.)*(\w+)'>:\s*")


class SlimformerError(Exception):
    """An error caused by the user's input (model, data, recipe, arguments), not a bug."""


def check(condition: bool, message: str) -> None:
    """Raise SlimformerError(message) unless condition holds."""
    if not condition:
        raise SlimformerError(message)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A complete one-line summary of an exception whose message may span many lines.

    Third-party messages (the ONNX exporter's, ORT's) put the cause after a header and a list of advice;
    this keeps the cause ("## Exception summary" section, or the first line without a dangling "...:")."""
    text = _ANSI.sub("", str(exc)).strip()
    if "## Exception summary" in text:
        tail = [ln.strip() for ln in text.split("## Exception summary", 1)[1].splitlines() if ln.strip()]
        if tail:
            text = _CLASS.sub(lambda m: m.group(1) + ": ", tail[0])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    if first.endswith(":"):  # "... Next steps:" announces lines that are advice, not the cause: drop it
        head = first[:-1]
        cut = max(head.rfind(". "), head.rfind("! "))
        first = head[: cut + 1] if cut > 0 else (f"{head}: {lines[1]}" if len(lines) > 1 else head)
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first
