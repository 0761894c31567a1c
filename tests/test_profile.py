"""The profile's sums and shape."""
import pytest

from slimformer.profile import profile_model


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_component_params_add_up(tiny_bert, tokenizer, model_type):
    m = tiny_bert(layers=3, model_type=model_type)
    prof = profile_model(m, tokenizer, seq_len=16, batch=2, runs=2)
    rows = {r["component"]: r for r in prof["rows"]}
    assert sum(r["params"] for r in prof["rows"]) == prof["total"]["params"] == sum(p.numel() for p in m.parameters())
    assert {"embeddings", "layer 0 attention", "layer 2 ffn", "layernorm", "head"} <= set(rows)
    assert sum(r["params_share"] for r in prof["rows"]) == pytest.approx(1.0)
    assert sum(r["flops"] for r in prof["rows"]) <= prof["total"]["flops"]
    assert rows["layer 0 ffn"]["flops"] > 0 and rows["layer 1 attention"]["ms"] > 0
    assert prof["total"]["peak_activation_bytes"] > 0 and prof["total"]["size_on_disk_bytes"] > 0
    assert set(prof["by_kind"]) >= {"embeddings", "attention", "ffn"}


def test_compare_latency_blocks_drop_the_first_call(tokenizer):
    from slimformer.bench import compare_latency

    calls = {"a": 0, "b": 0}

    def make(k):
        def f(inputs):
            calls[k] += 1
        return f

    lat = compare_latency({"a": make("a"), "b": make("b")}, tokenizer, 1, 8, warmup=2, runs=3, block=4, retries=0)
    assert calls == {"a": 2 + 1 + 3 * 4, "b": 2 + 1 + 3 * 4}
    assert lat["a"].runs == 3 * 3 and lat["b"].runs == 3 * 3
    lat = compare_latency({"a": make("a")}, tokenizer, 1, 8, warmup=0, runs=5, block=1, retries=0)
    assert lat["a"].runs == 5
