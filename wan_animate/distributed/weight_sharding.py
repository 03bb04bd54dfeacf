"""Weight sharding of the sequence-parallel workers' DiT with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Each transformer block is sharded over the worker group: a rank keeps 1/N of every block's parameters, and the
block's FSDP2 pre-forward hook all-gathers them for its forward (freed again after it). `sequence_parallel_forward`
runs unchanged: every rank calls every block once, in the same order, so the all-gathers match across ranks. The
rest of the model (embeddings, head, face adapter and encoders: 6.5% of the 14B weights) stays replicated: it is
called outside the model's own forward, and the face blocks run a rank-dependent number of times.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ..model.dit import WanAnimateDiT

SHARD_SETTINGS = ("auto", "on", "off")
PLAIN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def has_plain_weights(model: WanAnimateDiT) -> bool:
    """Whether every block weight is an ordinary 16/32-bit float tensor (not fp8 or GGUF-quantised storage), which
    is what FSDP2 shards and all-gathers."""
    tensors = [*model.blocks.parameters(), *model.blocks.buffers()]
    return all(t.dtype in PLAIN_DTYPES and type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)


def effective_setting(setting: str, has_loras: bool, plain_weights: bool, options_allow: bool) -> str:
    """The setting the planner applies: "auto" becomes "off" for a job with LoRAs, fp8 or GGUF weights, or options
    that cannot be sharded (block offloading is then the fallback); "on" with fp8 or GGUF weights is refused."""
    if setting == "on" and not plain_weights:
        raise ValueError("shard_weights 'on' needs 16/32-bit float weights; the model stores fp8 or quantised (GGUF) "
                         "transformer weights: set shard_weights to 'off' or load a bf16 file")
    if setting == "auto" and (has_loras or not plain_weights or not options_allow):
        return "off"
    return setting


def should_shard_weights(
    setting: str, device_type: str, model_bytes: int, activation_bytes: int, free_bytes: int | None
) -> bool:
    """Whether the workers shard the DiT's blocks: "on" / "off" as asked; "auto" on CUDA when the whole model plus one
    forward's activations (per GPU) exceed the GPU's free memory, never on the CPU (`free_bytes` None there)."""
    if setting not in SHARD_SETTINGS:
        raise ValueError(f"shard_weights is {setting!r}; expected one of {', '.join(SHARD_SETTINGS)}")
    if setting != "auto":
        return setting == "on"
    if device_type != "cuda" or free_bytes is None:
        return False
    return model_bytes + activation_bytes > free_bytes


def shard_blocks(model: WanAnimateDiT, device: torch.device) -> None:
    """Place `model` on `device` with each transformer block sharded over the default process group (FSDP2) and the
    other modules whole; a block is moved whole, then cut, so the device never holds more than one full block."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.blocks:
        block.to(device)
        fully_shard(block, mesh=mesh)
    for name, child in model.named_children():
        if name != "blocks":
            child.to(device)


def local_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights this rank holds: its slices of sharded parameters, the whole of the others."""
    tensors = [*model.parameters(), *model.buffers()]
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local)
