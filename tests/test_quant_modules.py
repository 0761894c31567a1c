"""Quantize/dequantize round trips and quantized module numerics (tiny tensors, no timing)."""
import torch
from torch import nn

from slimformer.quantize.modules import (QEmbedding, QLinear, dequantize_groups, pack4, quantize_groups,
                                         quantize_symmetric, unpack4)


def test_symmetric_int8_round_trip_within_half_step():
    w = torch.randn(64, 48)
    q, s = quantize_symmetric(w)
    assert q.dtype == torch.int8
    assert ((q.float() * s[:, None] - w).abs() <= s[:, None] / 2 + 1e-6).all()


def test_group_round_trip_within_half_step_for_8_and_4_bits():
    w = torch.randn(16, 64) * 3
    for bits, gs in ((8, None), (4, 16), (4, None)):
        q, s, z = quantize_groups(w, bits, gs)
        back = dequantize_groups(q, s, z, gs)
        step = s.repeat_interleave(64 // s.shape[1], dim=1)
        assert (back - w).abs().le(step / 2 + 1e-5).all(), bits
    # finer groups -> smaller error
    e_row = (dequantize_groups(*quantize_groups(w, 4, None), None) - w).abs().mean()
    e_grp = (dequantize_groups(*quantize_groups(w, 4, 16), 16) - w).abs().mean()
    assert e_grp < e_row


def test_pack4_is_lossless():
    q = torch.randint(0, 16, (5, 8), dtype=torch.uint8)
    p = pack4(q)
    assert p.shape == (5, 4) and torch.equal(unpack4(p), q)


def test_qlinear_modes_close_to_float():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(3, 7, 64)
    ref = lin(x).detach()
    for bits, gs, act, tol in ((8, None, "dynamic", 0.03), (8, None, "none", 0.01), (4, 16, "none", 0.15)):
        q = QLinear.from_linear(lin, bits, gs, act)
        with torch.no_grad():
            y = q(x)
        rel = float((y - ref).norm() / ref.norm())
        assert rel < tol, (bits, act, rel)
    q4 = QLinear.from_linear(lin, 4, 16, "none")
    assert q4.qweight.numel() == 64 * 32 // 2  # really packed


def test_qembedding_lookup_matches_dequantized_table():
    emb = nn.Embedding(100, 32)
    for bits in (8, 4):
        q = QEmbedding.from_embedding(emb, bits, 16 if bits == 4 else None)
        ids = torch.tensor([[1, 5, 99], [0, 0, 7]])
        assert torch.equal(q(ids), q.weight[ids])
        assert float((q.weight - emb.weight).abs().max()) < (0.05 if bits == 8 else 0.5)
