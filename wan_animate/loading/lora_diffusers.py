"""Module names of the diffusers Wan transformer (`transformer_wan.py`) mapped to the original Wan names.

LoRAs trained with diffusers-based tools name their targets `transformer.blocks.0.attn1.to_q` and so on; the model
here uses the official names (`blocks.0.self_attn.q`). Animate-only modules have no mapping here: they stay as they
are and are reported as unmatched if the model has no such module.
"""
from __future__ import annotations

import re

_BLOCK_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "attn2.norm_added_k": "cross_attn.norm_k_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
    "norm2": "norm3",  # the affine LayerNorm before cross-attention
    "scale_shift_table": "modulation",
}
_TOP_NAMES = {
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def diffusers_to_wan(name: str) -> str:
    """`blocks.3.attn2.add_k_proj` -> `blocks.3.cross_attn.k_img`; names without a mapping are returned unchanged."""
    if name.startswith("transformer."):
        name = name[len("transformer."):]
    block = _BLOCK.match(name)
    if block:
        index, rest = block.groups()
        return f"blocks.{index}.{_BLOCK_NAMES[rest]}" if rest in _BLOCK_NAMES else name
    return _TOP_NAMES.get(name, name)
