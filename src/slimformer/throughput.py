"""Sentences per second, measured the way users of sentence encoders measure it.

A corpus of real sentences is encoded end to end (tokenisation, forward, mean pooling, normalisation):
sorted by length, cut into batches of `batch`, each batch padded only to its own longest sentence (dynamic
padding), as sentence-transformers' `encode` does (`predictor` runs a task model the same way, to time it at a
task's real lengths rather than a fixed 128). Candidates are timed interleaved in the same process
(one pass over the corpus each, in turn, for `rounds` rounds) after a warm-up, so machine noise hits them
alike; the figure is the median pass. The machine is watched and the passes checked with the same rules as
every latency (reliability.py): a result carries its spread, `reliable` and a `warning`.

    tp = sentence_throughput(lambda: {"teacher": encoder(model, tok), "int8": onnx_encoder("m.onnx", tok)},
                             texts, batch=32)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .bench import threads
from .cpuload import CpuSample, allowed_cpus, others_cores, resolution_cores, usable_cores
from .reliability import MachineLoad, machine_problems, sample_problems, spread

Encoder = Callable[[list[str]], Any]  # a batch of sentences -> their embeddings


@dataclass
class Throughput:
    """One candidate at one batch size: sentences/s of the median pass and the spread of the passes."""

    batch: int
    threads: int
    sentences: int
    sentences_per_s: float
    pass_median_s: float
    pass_min_s: float
    pass_max_s: float
    passes: int
    mean_tokens: float
    reliable: bool = True
    warning: str = ""
    others_cores: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def encoder(model: torch.nn.Module, tokenizer: Any, max_len: int = 128) -> Encoder:
    """Tokenise with dynamic padding, run the model (torch, or slimformer's ORT-wrapped module), mean-pool and
    L2-normalise."""
    from .bench import as_forward
    from .tasks.similarity import mean_pool

    fwd = as_forward(model)

    def run(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return torch.nn.functional.normalize(mean_pool(fwd(inputs), enc["attention_mask"]), dim=-1)

    return run


def predictor(model: Any, tokenizer: Any, max_len: int = 128) -> Encoder:
    """A task model (classifier, regressor) run end to end on single sentences: tokenise with dynamic padding and
    run it (torch, or slimformer's ORT-wrapped module); returns its raw output. For timing at real lengths."""
    from .bench import as_forward

    fwd = as_forward(model)

    def run(texts: list[str]) -> Any:
        enc = tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return fwd({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})

    return run


def onnx_encoder(path: str, tokenizer: Any, max_len: int = 128) -> Encoder:
    """A pooled ONNX graph (`export --embedding`): tokenise with dynamic padding, run in ONNX Runtime (the
    session's threads: torch's thread count when the encoder is made)."""
    from .export import OnnxModel

    model = OnnxModel(path)

    def run(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        feed = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "token_type_ids" in model.input_names:
            feed["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        return model(feed)

    return run


def length_batches(texts: Sequence[str], batch: int) -> list[list[str]]:
    """Sentences sorted by length (longest first, as sentence-transformers does) in batches of `batch`."""
    order = sorted(texts, key=len, reverse=True)
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def sentence_throughput(make: Callable[[], Mapping[str, Encoder]], texts: Sequence[str], batch: int,
                        n_threads: int | None = None, rounds: int = 3, tokenizer: Any = None
                        ) -> dict[str, Throughput]:
    """Sentences/s of each encoder over texts at one batch size, interleaved, with reliability.

    `make` builds the encoders inside the thread setting (ONNX Runtime fixes its thread count when a session
    is created); `tokenizer` only serves to report the mean tokens per sentence."""
    batches = length_batches(texts, batch)
    mean_tokens = float("nan")
    if tokenizer is not None:
        mean_tokens = sum(len(x) for x in tokenizer(list(texts), truncation=True, max_length=128)["input_ids"]) \
            / max(1, len(texts))
    with threads(n_threads) as nt:
        encs = dict(make())
        for enc in encs.values():  # warm-up: the longest and the shortest batches
            enc(batches[0])
            enc(batches[-1])
        passes: dict[str, list[float]] = {k: [] for k in encs}
        a = CpuSample.take()
        for _ in range(rounds):
            for k, enc in encs.items():
                t = time.perf_counter()
                for b in batches:
                    enc(b)
                passes[k].append(time.perf_counter() - t)
        b_ = CpuSample.take()
    cpus = len(allowed_cpus())
    load = MachineLoad(threads=nt, usable=usable_cores(), cpus=cpus, others=others_cores(a, b_),
                       resolution=resolution_cores(cpus, b_.wall - a.wall), load_before=a.load1, load_after=b_.load1)
    shared = machine_problems(load)
    out = {}
    for k, ts in passes.items():
        ms = [t * 1000 for t in ts]
        problems = shared + sample_problems(ms)
        s = spread(ms)
        out[k] = Throughput(batch=batch, threads=nt, sentences=len(texts),
                            sentences_per_s=len(texts) / (s["median_ms"] / 1000), pass_median_s=s["median_ms"] / 1000,
                            pass_min_s=s["min_ms"] / 1000, pass_max_s=s["max_ms"] / 1000, passes=len(ts),
                            mean_tokens=mean_tokens, reliable=not problems,
                            warning="; ".join(r for _, r in problems),
                            others_cores=None if load.others is None else round(load.others, 2))
    return out
