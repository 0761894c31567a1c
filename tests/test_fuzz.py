"""A seeded fuzzer over recipes and data files: whatever the input, slimformer answers with a result or one
`SlimformerError` line, never another exception. Small budget here; raise FUZZ_CASES to fuzz longer."""
from __future__ import annotations

import json
import os
import random

import pytest

from slimformer import tasks
from slimformer.errors import SlimformerError
from slimformer.recipe import preflight, read_recipe
from slimformer.steps import REGISTRY, known_steps

CASES = int(os.environ.get("FUZZ_CASES", "150"))
ATOMS = [0, 1, -1, 2, 0.5, -0.5, 1e9, -1e9, 1e-12, float("nan"), float("inf"), True, False, None, "", "x", "0.5",
         "gradient", "global", "per_layer", "encoder", "decoder", "(", ".*", [], [0], [[0, 1]], {}, {"a": 1}, [1, "a"],
         "é" * 3, "\x00", 10 ** 30]


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 2 and r < 0.1:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 2 and r < 0.15:
        return {rng.choice(["keep", "step", "x", "split"]): _value(rng, depth + 1)}
    return rng.choice(ATOMS)


def _step(rng: random.Random) -> dict:
    name = rng.choice(known_steps() + ["no_such_step", 3, None])
    fields = list(REGISTRY[name][0].model_fields) if name in REGISTRY else ["keep"]
    step = {"step": name}
    for f in rng.sample(fields, k=min(len(fields), rng.randint(0, 4))):
        step[f] = _value(rng)
    if rng.random() < 0.1:
        step[rng.choice(["bogus", "Keep", ""])] = _value(rng)
    return step


def _recipe(rng: random.Random) -> str:
    doc: dict = {"steps": [_step(rng) for _ in range(rng.randint(0, 4))]}
    if rng.random() < 0.4:
        doc["eval"] = {k: _value(rng) for k in rng.sample(["split", "batches", "seq_len", "max_len", "threads",
                                                           "latency_budget_s", "tolerance", "nope"], 2)}
    if rng.random() < 0.2:
        doc["task"] = _value(rng)
    text = json.dumps(doc, allow_nan=True)  # JSON is YAML; NaN/Infinity become strings or floats
    if rng.random() < 0.1:
        text = text[: rng.randint(0, len(text))]  # torn
    return text


def test_fuzz_recipes(tmp_path, tiny_bert):
    rng = random.Random(1234)
    model = tiny_bert(layers=2)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(CASES):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(_recipe(rng))
        try:
            recipe = read_recipe(path)
            preflight(model, recipe.parsed_steps(), None, recipe.eval)
            outcomes["ok"] += 1
        except SlimformerError as e:
            assert "\n" not in str(e) and str(e), path.read_text()
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 (the point: nothing else may escape)
            pytest.fail(f"{type(e).__name__}: {e} on recipe {path.read_text()!r}")
    assert outcomes["refused"] > 0


def _bytes(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    rows = []
    for _ in range(rng.randint(0, 6)):
        cells = [rng.choice(["text", "label", "sentence1", "sentence2", "score", "", "a,b", '"q"', "1", "x\ty",
                             "0.5", "nan", "é", "{", "[1]"]) for _ in range(rng.randint(1, 4))]
        rows.append(rng.choice([",", "\t", " "]).join(cells))
    text = "\n".join(rows)
    if kind > 0.85:
        text = "\n".join(json.dumps({rng.choice(["text", "label", "en", "de", "score", "sentence1", "sentence2"]):
                                     _value(rng) for _ in range(3)}) for _ in range(3))
    return text.encode("utf-8", "surrogatepass")


FILES = {
    "sst2": ["stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"],
    "classification": ["train.csv", "dev.tsv", "test.jsonl"],
    "stsb": ["sts-train.csv", "sts-dev.csv"],
    "translation": ["train.en", "train.de", "val.en", "val.de", "train.jsonl"],
    "lm": ["valid.txt", "test.txt"],
}


@pytest.mark.parametrize("task", list(FILES))
def test_fuzz_data_files(tmp_path, task):
    rng = random.Random(hash(task) % 1000)
    for i in range(CASES // 5):
        d = tmp_path / f"{task}{i}"
        d.mkdir()
        for name in rng.sample(FILES[task], k=rng.randint(1, len(FILES[task]))):
            (d / name).write_bytes(_bytes(rng))
        try:
            tasks.load(task, d)
        except SlimformerError as e:
            assert "\n" not in str(e) and str(e)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{task}: {type(e).__name__}: {e} on {[(f.name, f.read_bytes()[:80]) for f in d.iterdir()]}")
