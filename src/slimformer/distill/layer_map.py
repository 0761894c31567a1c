"""Which student layer learns from which teacher layer.

Layers are 0-based indices of Transformer layers (the output of layer i is `hidden_states[i + 1]`);
-1 names the embedding output (TinyBERT's embedding loss) and may appear only as the pair [-1, -1].

- `uniform`: student layer i <- teacher layer round((i + 1) * n / m) - 1 (the last maps to the last).
- `skip` (PKD-skip): every k-th teacher layer, k = n / m (n must be a multiple of m).
- `last` (PKD-last): the student's layers learn from the teacher's last m layers.
- an explicit list of [student, teacher] pairs.
"""
from __future__ import annotations

from typing import Union

from ..errors import SlimformerError

LayerMapSpec = Union[str, list[list[int]]]
Pairs = list[tuple[int, int]]


def build_layer_map(spec: LayerMapSpec, n_student: int, n_teacher: int) -> Pairs:
    """Resolve and validate a layer map; raises SlimformerError naming the problem."""
    m, n = n_student, n_teacher
    if m < 1 or n < 1:
        raise SlimformerError(f"layer_map: both models need layers (student {m}, teacher {n})")
    if isinstance(spec, str):
        if m > n and spec != "uniform":
            raise SlimformerError(f"layer_map '{spec}': the student has more layers ({m}) than the teacher ({n})")
        if spec == "uniform":
            return [(i, max(0, round((i + 1) * n / m) - 1)) for i in range(m)]
        if spec == "skip":
            if n % m:
                raise SlimformerError(f"layer_map 'skip' needs teacher layers ({n}) to be a multiple of student "
                                      f"layers ({m}); use 'uniform' or an explicit list")
            k = n // m
            return [(i, (i + 1) * k - 1) for i in range(m)]
        if spec == "last":
            return [(i, n - m + i) for i in range(m)]
        raise SlimformerError(f"layer_map: unknown strategy '{spec}' (use uniform, skip, last or [[s, t], ...])")
    pairs: Pairs = []
    for item in spec:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(isinstance(x, int) for x in item):
            raise SlimformerError(f"layer_map: each entry must be a pair [student_layer, teacher_layer], got {item!r}")
        s, t = int(item[0]), int(item[1])
        if (s == -1) != (t == -1):
            raise SlimformerError(f"layer_map: -1 (embeddings) can only be paired with -1, got [{s}, {t}]")
        if not -1 <= s < m:
            raise SlimformerError(f"layer_map: student layer {s} does not exist (student has layers 0..{m - 1})")
        if not -1 <= t < n:
            raise SlimformerError(f"layer_map: teacher layer {t} does not exist (teacher has layers 0..{n - 1})")
        pairs.append((s, t))
    if not pairs:
        raise SlimformerError("layer_map: the explicit list is empty")
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise SlimformerError(f"layer_map: a student layer appears twice in {[list(p) for p in pairs]}")
    return pairs


def describe_layer_map(pairs: Pairs) -> str:
    """One line such as 'student 0 <- teacher 1, student 1 <- teacher 3'."""
    name = {-1: "emb"}
    return ", ".join(f"student {name.get(s, s)} <- teacher {name.get(t, t)}" for s, t in pairs)
