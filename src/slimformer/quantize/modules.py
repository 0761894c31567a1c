"""Quantized modules whose state is plain integer tensors + scales, so safetensors stores them at real size.

- `QLinear`: INT8 symmetric per-output-channel weights executed by fbgemm (`quantized.linear_dynamic` for
  dynamic activations, one scale per call; `quantized.linear` for calibrated static activations), or with
  dynamic per-token activations (`act='token'`: one symmetric scale per row, `torch._int_mm` int8 x int8 ->
  int32, oneDNN on CPU); or low-bit (8/4/3) group-wise
  asymmetric weights with activations left in floating point ("weight-only", dequantized once and cached, or
  with `kernel='int4'` (4/3-bit) multiplied as packed codes by torch's CPU int4 kernel, see int4_cpu.py).
- `QEmbedding`: int8 / packed int4 / packed int3 rows with per-row (or per-group) scales, dequantized on lookup.

The fbgemm packed weight is rebuilt lazily from the integer buffers (keyed on their version counters), so a
model loaded from safetensors, a deep copy and a freshly quantized model all execute the same way.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import int4_cpu

Act = Literal["dynamic", "static", "none", "token"]



# --- tensor-level quantization ----------------------------------------------------------------------
def quantize_symmetric(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric quantization: (int8 codes in [-qmax, qmax], float scale per row)."""
    qmax = 2 ** (bits - 1) - 1
    scale = (w.detach().abs().amax(dim=1) / qmax).clamp(min=1e-12).float()
    q = torch.clamp(torch.round(w.detach().float() / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale


def group_view(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """[rows, cols] -> [rows, groups, group_size] (one group per row when group_size is None)."""
    rows, cols = w.shape
    g = cols if not group_size or group_size >= cols else group_size
    if cols % g:
        raise ValueError(f"group size {g} does not divide {cols} columns")
    return w.reshape(rows, cols // g, g)


def fit_group(cols: int, group_size: int | None) -> int | None:
    """The group size used for `cols` input columns: None (one group per row) when it does not divide them."""
    if not group_size or group_size >= cols:
        return None
    return group_size if cols % group_size == 0 else None


def _grid(lo: torch.Tensor, hi: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    # stored as fp16: round up (fp16 rounding error < 2**-11) so that the grid still covers [lo, hi]
    scale = ((hi - lo) / levels * (1 + 2 ** -10)).clamp(min=1e-6).half().float()
    return scale, torch.clamp(torch.round(-lo / scale), 0, levels)


def group_params(w: torch.Tensor, bits: int, group_size: int | None, mse: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric (scale, zero) per group, shapes [rows, groups]: the min-max grid, or with `mse` the grid
    over [p * min, p * max] (p from 1 down to 0.21) that minimises sum |w - dequant(quant(w))|^2.4, the
    clipping search of the GPTQ reference code (its `mse` option): clipping a few outliers buys resolution
    for the rest of the group."""
    wg = group_view(w.detach().float(), group_size)
    lo = wg.amin(-1).clamp(max=0)
    hi = wg.amax(-1).clamp(min=0)
    levels = 2 ** bits - 1
    scale, zero = _grid(lo, hi, levels)
    if not mse:
        return scale, zero

    def err(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(wg / s[..., None]) + z[..., None], 0, levels)
        return ((q - z[..., None]) * s[..., None] - wg).abs().pow(2.4).sum(-1)

    best = err(scale, zero)
    for i in range(1, 80):
        s, z = _grid(lo * (1 - i / 100), hi * (1 - i / 100), levels)
        e = err(s, z)
        better = e < best
        scale, zero, best = torch.where(better, s, scale), torch.where(better, z, zero), torch.where(better, e, best)
    return scale, zero


def quantize_groups(w: torch.Tensor, bits: int, group_size: int | None, scale: torch.Tensor | None = None,
                    zero: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric round-to-nearest: (uint8 codes [rows, cols], scale, zero)."""
    if scale is None or zero is None:
        scale, zero = group_params(w, bits, group_size)
    wg = group_view(w.detach().float(), group_size)
    q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, 2 ** bits - 1)
    return q.reshape(w.shape).to(torch.uint8), scale, zero


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int | None) -> torch.Tensor:
    qg = group_view(q.float(), group_size)
    return ((qg - zero.float()[..., None]) * scale.float()[..., None]).reshape(q.shape)


def pack4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dimension (which must be even)."""
    q = q.to(torch.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).contiguous()


def unpack4(p: torch.Tensor) -> torch.Tensor:
    out = torch.empty(*p.shape[:-1], p.shape[-1] * 2, dtype=torch.uint8, device=p.device)
    out[..., 0::2] = p & 0x0F
    out[..., 1::2] = p >> 4
    return out


def pack3(q: torch.Tensor) -> torch.Tensor:
    """Eight 3-bit codes in three bytes along the last dimension (zero-padded to a multiple of 8 codes)."""
    q = q.to(torch.int32)
    pad = -q.shape[-1] % 8
    if pad:
        q = F.pad(q, (0, pad))
    q = q.reshape(*q.shape[:-1], -1, 8)
    word = sum(q[..., i] << (3 * i) for i in range(8))  # 24 bits
    out = torch.stack([(word >> (8 * i)) & 0xFF for i in range(3)], dim=-1)
    return out.reshape(*q.shape[:-2], -1).to(torch.uint8).contiguous()


def unpack3(p: torch.Tensor, cols: int) -> torch.Tensor:
    """The first `cols` 3-bit codes of rows packed by pack3."""
    b = p.to(torch.int32).reshape(*p.shape[:-1], -1, 3)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    q = torch.stack([(word >> (3 * i)) & 7 for i in range(8)], dim=-1)
    return q.reshape(*p.shape[:-1], -1)[..., :cols].to(torch.uint8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes as stored: 8-bit as is, 4-bit two per byte, 3-bit eight per three bytes."""
    return pack4(q) if bits == 4 else pack3(q) if bits == 3 else q.to(torch.uint8)


def unpack(p: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    return unpack4(p) if bits == 4 else unpack3(p, cols) if bits == 3 else p


def _storage_cols(cols: int, bits: int) -> int:
    return cols // 2 if bits == 4 else -(-cols // 8) * 3 if bits == 3 else cols


# --- modules ------------------------------------------------------------------------------------------
class QLinear(nn.Module):
    """A Linear with quantized weights. act='dynamic'|'static' needs bits=8 per-channel (fbgemm INT8 GEMM);
    act='none' is weight-only (bits 8, 4 or 3, optional group_size), executed in fp32 after one dequantization.
    3-bit codes are really packed (8 codes in 3 bytes), so a 3-bit layer is 3/8 of an 8-bit one on disk."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 8,
                 group_size: int | None = None, act: Act = "dynamic"):
        super().__init__()
        if bits not in (3, 4, 8):
            raise ValueError("bits must be 3, 4 or 8")
        if act != "none" and (bits != 8 or group_size):
            raise ValueError("INT8 activations need 8-bit per-channel weights (no group_size)")
        if bits == 4 and in_features % 2:
            raise ValueError("4-bit packing needs an even number of input features")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.act = bits, group_size, act
        groups = group_view(torch.empty(1, in_features), group_size).shape[1]
        if act == "none":
            self.register_buffer("qweight", torch.zeros(out_features, _storage_cols(in_features, bits), dtype=torch.uint8))
            self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float16))
            self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8))
        else:
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        if act == "static":  # calibrated input range and output range: (scale, zero_point) pairs
            self.register_buffer("act_qparams", torch.tensor([1.0, 0.0, 1.0, 0.0]))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.kernel = "dequant"  # weight-only: "int4" runs on torch's CPU int4 kernel (ops.use_weight_kernel)
        self._cache: tuple[Any, Any] | None = None

    # quantize from float weights
    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int = 8, group_size: int | None = None, act: Act = "dynamic") -> "QLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, bits, group_size, act)
        q.set_weight(lin.weight.data)
        if lin.bias is not None:
            q.bias.data.copy_(lin.bias.data.float())
        return q

    def set_weight(self, w: torch.Tensor, scale: torch.Tensor | None = None, zero: torch.Tensor | None = None) -> None:
        """Quantize float weights w (round to nearest), or store the given grid (scale, zero) for GPTQ."""
        if self.act == "none":
            q, s, z = quantize_groups(w, self.bits, self.group_size, scale, zero)
            self.qweight.copy_(pack(q, self.bits))
            self.scale.copy_(s.half())
            self.zero.copy_(z.to(torch.uint8))
        else:
            q, s = quantize_symmetric(w, 8)
            self.qweight.copy_(q)
            self.scale.copy_(s)

    def set_codes(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Store precomputed uint8 codes (weight-only) with their group scale and zero."""
        self.qweight.copy_(pack(q, self.bits))
        self.scale.copy_(scale.half())
        self.zero.copy_(zero.to(torch.uint8))

    def dequantized_weight(self) -> torch.Tensor:
        if self.act == "none":
            q = unpack(self.qweight, self.bits, self.in_features)
            return dequantize_groups(q, self.scale, self.zero, self.group_size)
        return self.qweight.float() * self.scale[:, None]

    # execution
    def _key(self) -> tuple:
        ts = [self.qweight, self.scale] + ([self.bias] if self.bias is not None else [])
        return (self.kernel, *((id(t), t._version) for t in ts))

    def _prepared(self) -> Any:
        key = self._key()
        if self._cache is None or self._cache[0] != key:
            if self.act == "none" and self.kernel == "int4":
                prepared = int4_cpu.pack(unpack(self.qweight, self.bits, self.in_features), self.scale, self.zero)
            elif self.act == "none":
                prepared = self.dequantized_weight()
            elif self.act == "token":
                prepared = self.qweight.t().contiguous()  # [in, out] int8 for torch._int_mm
            else:
                zp = torch.zeros(self.out_features, dtype=torch.long)
                with warnings.catch_warnings():  # the quantized-tensor API is deprecated; fbgemm still needs it
                    warnings.simplefilter("ignore")
                    qw = torch._make_per_channel_quantized_tensor(self.qweight, self.scale.double(), zp, 0)
                bias = self.bias.detach().float() if self.bias is not None else None
                prepared = torch.ops.quantized.linear_prepack(qw, bias)
            self._cache = (key, prepared)
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "none" and self.kernel == "int4":
            if x.requires_grad or x.device.type != "cpu":
                return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)
            return int4_cpu.matmul(x, *self._prepared(), self.group_size or self.in_features, self.bias)
        prepared = self._prepared()
        if self.act == "none":
            return F.linear(x, prepared.to(x.dtype), self.bias)
        if x.requires_grad or x.dtype != torch.float32:  # fbgemm kernels are inference-only fp32
            w = self.dequantized_weight()
            return F.linear(x, w, self.bias)
        if self.act == "dynamic":
            return torch.ops.quantized.linear_dynamic(x, prepared, False)
        if self.act == "token":
            return self._per_token(x, prepared)
        in_s, in_zp, out_s, out_zp = self.act_qparams.tolist()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xq = torch.quantize_per_tensor(x.contiguous(), in_s, int(in_zp), torch.quint8)
        return torch.ops.quantized.linear(xq, prepared, out_s, int(out_zp)).dequantize()

    def _per_token(self, x: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
        """INT8 activations with one symmetric scale per token, int32 accumulation, rescaled to fp32."""
        x2 = x.reshape(-1, self.in_features)
        sx = (x2.abs().amax(1) / 127).clamp(min=1e-12)
        xq = torch.clamp(torch.round(x2 / sx[:, None]), -127, 127).to(torch.int8)
        y = torch._int_mm(xq, w_t).float() * sx[:, None] * self.scale[None, :]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def __getstate__(self) -> dict[str, Any]:  # deepcopy/pickle: the fbgemm cache is rebuilt on demand
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        k = ", kernel=int4" if self.kernel == "int4" else ""
        return f"{self.in_features}, {self.out_features}, bits={self.bits}{g}, act={self.act}{k}"


class QEmbedding(nn.Module):
    """An embedding table stored as 8-, 4- or 3-bit group-wise codes, dequantized row by row on lookup."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, bits: int = 8,
                 group_size: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.bits, self.group_size = bits, group_size
        groups = group_view(torch.empty(1, embedding_dim), group_size).shape[1]
        self.register_buffer("qweight", torch.zeros(num_embeddings, _storage_cols(embedding_dim, bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_embeddings, groups, dtype=torch.float16))
        self.register_buffer("zero", torch.zeros(num_embeddings, groups, dtype=torch.uint8))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int = 8, group_size: int | None = None) -> "QEmbedding":
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, bits, group_size)
        codes, s, z = quantize_groups(emb.weight.data, bits, group_size)
        q.qweight.copy_(pack(codes, bits))
        q.scale.copy_(s.half())
        q.zero.copy_(z)
        return q

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (for code that reads `.weight`, e.g. weight tying); costs a full dequantize."""
        return self._rows(self.qweight, self.scale, self.zero)

    def _rows(self, q: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        codes = unpack(q, self.bits, self.embedding_dim)
        return dequantize_groups(codes, s, z, self.group_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = self._rows(self.qweight[flat], self.scale[flat], self.zero[flat])
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"
