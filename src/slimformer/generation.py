"""What generation costs: prefill time, per-token decode time with the KV cache, tokens/s and cache memory.

Decoder-only: the prompt is one forward that fills the cache (prefill); each new token is one forward of one
token against the cache (decode). Encoder-decoder: the encoder runs once on the source (its time is reported
separately), then the decoder runs one token per step against its self-attention cache and the cached
cross-attention keys/values. Greedy next tokens, so the work per step is what beam 1 costs.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from .bench import threads
from .data import dummy_inputs


def cache_bytes(cache: Any) -> int:
    """Bytes of every key/value tensor a transformers Cache object holds (self and cross attention)."""
    seen: set[int] = set()
    total = 0

    def walk(obj: Any, depth: int = 0) -> None:
        nonlocal total
        if depth > 4 or obj is None:
            return
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
            return
        if isinstance(obj, (list, tuple)):
            for x in obj:
                walk(x, depth + 1)
            return
        for name in ("self_attention_cache", "cross_attention_cache", "layers", "keys", "values"):
            if hasattr(obj, name):
                walk(getattr(obj, name), depth + 1)

    walk(cache)
    return total


@torch.inference_mode()
def _decode(model: nn.Module, first: torch.Tensor, cache: Any, steps: int, mask: torch.Tensor
            ) -> tuple[list[float], Any]:
    """Times (ms) of `steps` one-token forwards against the cache (greedy next token), and the final cache."""
    times = []
    token = first
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        t = time.perf_counter()
        out = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
        times.append((time.perf_counter() - t) * 1000)
        cache = out.cache
        token = out.logits[:, -1:].argmax(-1)
    return times, cache


def generation_profile(model: nn.Module, tokenizer: Any, prompt_len: int = 128, new_tokens: int = 32,
                       batch: int = 1, n_threads: int | None = None, runs: int = 3) -> dict[str, Any]:
    """Median prefill (or encoder) ms, decode ms per token, tokens/s and KV-cache bytes after the run."""
    model.eval()
    inputs = dummy_inputs(tokenizer, batch, prompt_len, model=model)
    seq2seq = bool(model.config.is_encoder_decoder)
    start = torch.full((batch, 1), int(model.config.decoder_start_token_id or 0)) if seq2seq else None
    state: dict[str, int] = {"kv": 0}

    def run() -> tuple[float, list[float]]:
        t = time.perf_counter()
        if seq2seq:
            enc = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            ms = (time.perf_counter() - t) * 1000
            steps, cache = _decode_seq2seq(model, start, new_tokens, enc, inputs["attention_mask"])
        else:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=True)
            ms = (time.perf_counter() - t) * 1000
            steps, cache = _decode(model, out.logits[:, -1:].argmax(-1), out.cache, new_tokens,
                                   inputs["attention_mask"])
        state["kv"] = cache_bytes(cache)
        return ms, steps

    with torch.inference_mode():
        res = timed_generation(run, n_threads, runs, batch)
    if seq2seq:
        res = {"encoder_ms": res.pop("prefill_ms"), **res}
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, **res, "kv_cache_bytes": state["kv"]}


def ort_generation_profile(decoder: Any, vocab: int, prompt_len: int = 128, new_tokens: int = 32, batch: int = 1,
                           n_threads: int | None = None, runs: int = 3) -> dict[str, Any]:
    """The same figures for an ONNX Runtime decoder loop (`export_generative.OrtDecoder`; its session's threads
    are fixed when it is created)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch, prompt_len), generator=g).numpy()

    def run() -> tuple[float, list[float]]:
        times: list[float] = []
        decoder.generate(ids, new_tokens + 1, times=times, stop_at_eos=False)
        return times[0], times[1:]

    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, **timed_generation(run, n_threads, runs, batch)}


def timed_generation(run: Any, n_threads: int | None, runs: int, batch: int = 1) -> dict[str, Any]:
    """`runs` timed calls of run() -> (prefill ms, [decode ms per step]) after one warm-up, with the machine
    checked before and after (the shared reliability rules of slimformer.reliability)."""
    from .cpuload import CpuSample, others_cores, resolution_cores, usable_cores
    from .reliability import MachineLoad, machine_problems, sample_problems, spread

    prefill: list[float] = []
    decode: list[float] = []
    with threads(n_threads or usable_cores()) as nt:
        before = CpuSample.take()
        for r in range(runs + 1):  # the first run warms up
            ms, steps = run()
            if r > 0:
                prefill.append(ms)
                decode.extend(steps)
        after = CpuSample.take()
    load = MachineLoad(nt, usable_cores(), after.cpus, others_cores(before, after),
                       resolution_cores(after.cpus, after.wall - before.wall), before.load1, after.load1)
    problems = machine_problems(load) + sample_problems(decode)
    per_token = statistics.median(decode)
    return {"threads": nt, "runs": runs, "prefill_ms": round(statistics.median(prefill), 3),
            "decode_ms_per_token": round(per_token, 3), "tokens_per_s": round(1000.0 * batch / per_token, 2),
            "decode_spread": spread(decode), "reliable": not problems,
            "warning": "; ".join(p[1] for p in sorted(problems, reverse=True))}


@torch.inference_mode()
def _decode_seq2seq(model: nn.Module, start: torch.Tensor, steps: int, enc: Any, mask: torch.Tensor
                    ) -> tuple[list[float], Any]:
    """Decoder step times (ms) and the final cache (self-attention and cached cross-attention keys/values)."""
    times: list[float] = []
    token, cache = start, None
    for _ in range(steps):
        t = time.perf_counter()
        out = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=token, cache=cache,
                    use_cache=True)
        times.append((time.perf_counter() - t) * 1000)
        cache = out.cache
        token = out.logits[:, -1:].argmax(-1)
    return times, cache
