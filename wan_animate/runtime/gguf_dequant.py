"""Dequantisation of GGML / GGUF block formats in torch, on whatever device the raw bytes are.

A quantised tensor is stored as rows of blocks; each block of `block_size` values is `type_size` bytes holding
float16 scales and packed integers (the ggml formats: llama.cpp's ggml-quants, mirrored by the `gguf` package's
`gguf.quants`). `dequantize(raw, qtype, shape)` takes the raw bytes ([..., row bytes] uint8) and returns float32
values equal bit for bit to `gguf.quants.dequantize` (same float32 operations in the same order; no fused
multiply-add in eager mode).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

QK_K = 256  # values per super-block of the k-quants


@dataclass(frozen=True)
class QuantType:
    name: str
    block_size: int  # values per block
    type_size: int  # bytes per block


# ggml type ids (GGMLQuantizationType) of the formats published Wan GGUF files use
QUANT_TYPES: dict[int, QuantType] = {
    0: QuantType("F32", 1, 4),
    1: QuantType("F16", 1, 2),
    2: QuantType("Q4_0", 32, 18),
    3: QuantType("Q4_1", 32, 20),
    6: QuantType("Q5_0", 32, 22),
    7: QuantType("Q5_1", 32, 24),
    8: QuantType("Q8_0", 32, 34),
    10: QuantType("Q2_K", QK_K, 84),
    11: QuantType("Q3_K", QK_K, 110),
    12: QuantType("Q4_K", QK_K, 144),
    13: QuantType("Q5_K", QK_K, 176),
    14: QuantType("Q6_K", QK_K, 210),
    30: QuantType("BF16", 1, 2),
}
FLOAT_TYPES = {0, 1, 30}  # stored as plain floats: read once, not kept quantised


def quant_type(qtype: int) -> QuantType:
    """The block layout of ggml type id `qtype`; ValueError naming the supported types otherwise."""
    if qtype not in QUANT_TYPES:
        supported = ", ".join(t.name for t in QUANT_TYPES.values())
        raise ValueError(f"ggml quantisation type {qtype} is not supported (supported: {supported})")
    return QUANT_TYPES[qtype]


def row_bytes(qtype: int, row_length: int) -> int:
    """Bytes of one row of `row_length` values (a multiple of the type's block size)."""
    layout = quant_type(qtype)
    if row_length % layout.block_size:
        raise ValueError(f"{layout.name} rows hold multiples of {layout.block_size} values; found {row_length}")
    return row_length // layout.block_size * layout.type_size


def dequantize(raw: torch.Tensor, qtype: int, shape: Sequence[int]) -> torch.Tensor:
    """Raw bytes of a `qtype` tensor (uint8, any shape with the right byte count) -> float32 tensor of `shape`."""
    layout = quant_type(qtype)
    blocks = raw.reshape(-1, layout.type_size)  # [n_blocks, type_size]
    values = _DEQUANTIZE[layout.name](blocks)  # [n_blocks, block_size]
    return values.reshape(tuple(shape))


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 at byte `start` of every block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _shift(values: torch.Tensor, shifts: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """`values` right-shifted by each of `shifts`, broadcast along a new axis: values [..] -> shape."""
    amounts = torch.tensor(shifts, dtype=torch.uint8, device=values.device).reshape(tuple(shape))
    return values >> amounts


def _nibbles(packed: torch.Tensor, group: int) -> torch.Tensor:
    """Low nibbles then high nibbles of each `group` bytes: [n, bytes] -> [n, bytes // group, 2, group]."""
    n = packed.shape[0]
    return _shift(packed.reshape(n, -1, 1, group), (0, 4), (1, 1, 2, 1)) & 0x0F


def _bits(packed: torch.Tensor, group: int) -> torch.Tensor:
    """Bit planes 0..7 of each `group` bytes: [n, bytes] -> [n, bytes // group, 8, group]."""
    n = packed.shape[0]
    return _shift(packed.reshape(n, -1, 1, group), tuple(range(8)), (1, 1, 8, 1)) & 1


def _low_bits_32(packed: torch.Tensor) -> torch.Tensor:
    """The 32 bits of a little-endian uint32 per block, bit i at position i: [n, 4] -> [n, 32] uint8."""
    n = packed.shape[0]
    return (_shift(packed.reshape(n, 4, 1), tuple(range(8)), (1, 1, 8)) & 1).reshape(n, 32)


def _f32(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float32)


def _f16_values(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float16).float()


def _bf16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.bfloat16).float()


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks, 0)
    x = blocks[:, 2:].contiguous().view(torch.int8).float()
    return x * d


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 2:], 16).reshape(n, -1).to(torch.int8) - 8
    return d * q.float()


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 4:], 16).reshape(n, -1).float()
    return (d * q) + m


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d = _f16(blocks, 0)
    high = _low_bits_32(blocks[:, 2:6])
    low = _nibbles(blocks[:, 6:], 16).reshape(n, -1)
    q = (low | (high << 4)).to(torch.int8) - 16
    return d * q.float()


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    high = _low_bits_32(blocks[:, 4:8])
    low = _nibbles(blocks[:, 8:], 16).reshape(n, -1)
    q = (low | (high << 4)).float()
    return (d * q) + m


def _q2_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = (_shift(qs.reshape(n, -1, 1, 32), (0, 2, 4, 6), (1, 1, 4, 1)) & 3).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    hmask, qs, scales = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks, 108)
    # 16 six-bit scales: low 4 bits in bytes 0-7 (two per byte), high 2 bits in bytes 8-11 (four per byte)
    low = _shift(scales[:, :8].reshape(n, 1, 8), (0, 4), (1, 2, 1)).reshape(n, 16)
    high = _shift(scales[:, 8:].reshape(n, 1, 4), (0, 2, 4, 6), (1, 4, 1)).reshape(n, 16)
    sc = ((low & 0x0F) | ((high & 3) << 4)).to(torch.int8) - 32
    dl = (d * sc.float()).reshape(n, 16, 1)
    ql = (_shift(qs.reshape(n, -1, 1, 32), (0, 2, 4, 6), (1, 1, 4, 1))).reshape(n, 16, 16) & 3
    qh = (_bits(hmask, 32).reshape(n, 16, 16)) ^ 1  # a set mask bit means no offset
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and mins of a Q4_K / Q5_K super-block from its 12 scale bytes: ([n, 8], [n, 8])."""
    n = scales.shape[0]
    grouped = scales.reshape(n, 3, 4)
    d, m, m_d = grouped[:, 0], grouped[:, 1], grouped[:, 2]  # [n, 4] each
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mins = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mins


def _k_scale_offset(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K / Q5_K: each 32-value sub-block's scale and offset [n, 8, 1] from d, dmin and the packed 6-bit pairs."""
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mins = _k_scale_min(blocks[:, 4:16])
    return (d * sc.float()).reshape(n, -1, 1), (dmin * mins.float()).reshape(n, -1, 1)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scale, offset = _k_scale_offset(blocks)
    q = _nibbles(blocks[:, 16:], 32).reshape(n, -1, 32).float()
    return (scale * q - offset).reshape(n, QK_K)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scale, offset = _k_scale_offset(blocks)
    low = _nibbles(blocks[:, 48:], 32).reshape(n, -1, 32)
    high = _bits(blocks[:, 16:48], 32).reshape(n, -1, 32)
    q = (low | (high << 4)).float()
    return (scale * q - offset).reshape(n, QK_K)


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    ql, qh = blocks[:, :128], blocks[:, 128:192]
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = (_f16(blocks, 208) * scales).reshape(n, 16, 1)
    low = _nibbles(ql, 64).reshape(n, -1, 32)
    high = (_shift(qh.reshape(n, -1, 1, 32), (0, 2, 4, 6), (1, 1, 4, 1)) & 3).reshape(n, -1, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, -1).float()
    return (d * q).reshape(n, QK_K)


_DEQUANTIZE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F32": _f32, "F16": _f16_values, "BF16": _bf16, "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0,
    "Q5_1": _q5_1, "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
