"""One DiT forward split over a sequence-parallel group (every rank calls it with the same full inputs).

Each rank embeds the whole input (the patch embedding is cheap next to the blocks), keeps its token shard with the
RoPE rows of those tokens, runs every block on it with Ulysses self-attention (cross-attention to the text and CLIP
tokens needs no exchange: the context is replicated), applies the face adapter run by run of whole or cut latent
frames, and all-gathers the head's output. Every rank returns the full prediction. Pose and face strengths act as in
`WanAnimateDiT.forward`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..model.dit import WanAnimateDiT
from ..model.face_adapter import FaceBlock
from ..model.rope import RopeTables
from .sharding import TokenShard
from .ulysses import UlyssesAttention


@torch.no_grad()
def sequence_parallel_forward(
    model: WanAnimateDiT,
    group: dist.ProcessGroup | None,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    clip_fea: torch.Tensor,
    y: torch.Tensor,
    pose_latents: torch.Tensor,
    motion_vec: torch.Tensor,
    pose_strength: float = 1.0,
    face_strength: float = 1.0,
) -> torch.Tensor:
    """The same prediction as `model(x, t, ..., pose_strength, face_strength)`, [out_dim, T, h, w] float32, computed
    over the group's ranks."""
    step = model.prepare(x, t, context, clip_fea, y, pose_latents, motion_vec, pose_strength)
    _, rows, cols = step.grid
    shard = TokenShard(step.tokens.shape[1], rows * cols, dist.get_rank(group), dist.get_world_size(group))
    rope = RopeTables(*(shard.take(part, dim=0) for part in step.rope))  # each [chunk, 1, head_dim / 2]
    use_ulysses_attention(model, group, shard.tokens)
    tokens = model.run_blocks(step, shard.take(step.tokens), rope, face_strength,  # [1, chunk, dim]
                              lambda block, x: face_residual(block, x, step.motion_vec, shard))

    local = model.head(tokens, step.time_emb).contiguous()  # [1, chunk, out_dim * patch]
    gathered = [torch.empty_like(local) for _ in range(shard.world)]
    dist.all_gather(gathered, local, group=group)
    patches = torch.cat(gathered, dim=1)[0, : shard.tokens]  # [L, out_dim * patch]
    return model.unpatchify(patches, step.grid)


def face_residual(block: FaceBlock, tokens: torch.Tensor, motion_vec: torch.Tensor, shard: TokenShard) -> torch.Tensor:
    """The face block's residual for one rank's tokens [1, chunk, dim]: each token attends to its own latent frame's
    motion tokens (motion_vec [1, T, N, dim]); padding tokens get zero."""
    residual = torch.zeros(tokens.shape, dtype=motion_vec.dtype, device=tokens.device)
    for start, stop, frame, count in shard.frame_runs():
        residual[:, start:stop] = block(tokens[:, start:stop], motion_vec[:, frame : frame + count])
    return residual


def use_ulysses_attention(model: WanAnimateDiT, group: dist.ProcessGroup | None, tokens: int) -> None:
    """Make every block's self-attention core Ulysses attention over a `tokens`-long sequence (installed once per
    model and kept: the worker's model only runs sequence-parallel; one object keeps torch.compile's guards stable)."""
    attend = model.blocks[0].self_attn.__dict__.get("attend")
    if not isinstance(attend, UlyssesAttention) or attend.group is not group:
        attend = UlyssesAttention(group, tokens)
        for block in model.blocks:
            block.self_attn.attend = attend
    attend.tokens = tokens
