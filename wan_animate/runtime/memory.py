"""Memory planning: how many transformer blocks to offload so that one denoising step fits in free VRAM.

VRAM needed with the last n of L blocks offloaded (see offload.py):

    need(n) = sum(block_bytes[:L-n])                      resident blocks
            + min(n, prefetch + 1) * max(block_bytes[L-n:])   offloaded blocks on the device at once
            + other_bytes                                  embeddings, head, face adapter, motion encoder, ...
            + activation_bytes                             peak activations of one forward (estimate below)
            + margin_bytes                                 fragmentation, CUDA context growth, kernel workspaces

`plan_offload` returns the smallest n with need(n) <= free_bytes. The activation estimate is an upper-bound style
model of the largest transient set inside one block; the benchmark (benchmarks/dit_step_bench.py) prints it next to the
measured peak so the constants can be checked on a GPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .fp8 import FP8_MATMUL_INPUT_DTYPES, FP8Linear
from .gguf_linear import GGUFLinear

GIB = 1 << 30
DEFAULT_MARGIN_BYTES = GIB
ACTIVATION_OVERHEAD = 1.2  # fragmentation of the caching allocator around the block-level peak
PATCH_SIZE = (1, 2, 2)
VAE_STRIDE = (4, 8, 8)


class MemoryPlanError(RuntimeError):
    """The model cannot run in the available VRAM even with every block offloaded."""


@dataclass(frozen=True)
class VramNeed:
    """The parts of need(n) in bytes."""

    resident_blocks: int
    streamed_blocks: int
    other: int
    activations: int
    margin: int

    @property
    def total(self) -> int:
        return self.resident_blocks + self.streamed_blocks + self.other + self.activations + self.margin


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (as stored: fp8 weights count one byte per element)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def block_bytes(blocks: nn.ModuleList) -> list[int]:
    """`module_bytes` of every block, in order."""
    return [module_bytes(block) for block in blocks]


def estimate_block_bytes(dim: int, ffn_dim: int, weight_bytes: float = 2.0) -> int:
    """Bytes of one Wan-Animate transformer block from its sizes, before it is built.

    Linear weights: self-attention q, k, v, o (4 dim^2), cross-attention q, k, v, o and the image k_img, v_img
    (6 dim^2), FFN (2 dim ffn_dim), stored at `weight_bytes` each (2 for bf16, 1 for fp8); biases, norms and the
    float32 modulation [1, 6, dim] are kept at 2 and 4 bytes.
    """
    matrices = (10 * dim * dim + 2 * dim * ffn_dim) * weight_bytes
    vectors = (10 * dim + ffn_dim + dim + 7 * dim) * 2  # biases + q/k norms + norm3 affine
    return int(matrices + vectors + 6 * dim * 4)


def latent_frame_count(frames: int) -> int:
    """Latent frames of a `frames`-long segment (VAE time stride 4: 1 + 4k frames)."""
    if frames < 1 or (frames - 1) % VAE_STRIDE[0]:
        raise ValueError(f"frames is {frames}; expected 4k+1 (1, 5, ..., 77, 81)")
    return (frames - 1) // VAE_STRIDE[0] + 1


def token_count(frames: int, height: int, width: int, reference_frames: int = 1) -> int:
    """DiT tokens of one segment: (latent frames + reference latents) * (height/16) * (width/16).

    16 = VAE spatial stride 8 x patch size 2. The reference image adds one latent frame in front.
    """
    step = VAE_STRIDE[1] * PATCH_SIZE[1]
    if height % step or width % step:
        raise ValueError(f"resolution is {width}x{height}; width and height must be multiples of {step}")
    return (latent_frame_count(frames) + reference_frames) * (height // step) * (width // step)


def estimate_activation_bytes(
    tokens: int, dim: int, ffn_dim: int, dtype: torch.dtype = torch.bfloat16, batch: int = 1
) -> int:
    """Peak activation bytes of one DiT forward, from the largest transient set inside one block.

    With a = bytes of the compute dtype (2 for bf16) and f = 4 (the residual stream, norms, modulation and RoPE run
    in float32, as in the official model), per token:
      attention stage: dim * (f residual + f modulated norm + a cast input + 3a q/k/v + 3f RoPE temporaries + a output)
      FFN stage:       dim * (f residual + f modulated norm + a cast input) + ffn_dim * (a hidden + a GELU output)
    peak = batch * tokens * max(attention stage, FFN stage) * ACTIVATION_OVERHEAD.
    Tensors shared by all blocks (text/image context, motion tokens, RoPE tables) are under 1% of this at 14B sizes.
    SDPA's flash / memory-efficient kernels keep attention itself O(tokens), so there is no tokens^2 term.
    """
    a = torch.empty((), dtype=dtype).element_size()
    f = 4
    attention_stage = dim * (f + f + a + 3 * a + 3 * f + a)
    ffn_stage = dim * (f + f + a) + ffn_dim * (a + a)
    return int(batch * tokens * max(attention_stage, ffn_stage) * ACTIVATION_OVERHEAD)


def vram_need(
    block_sizes: Sequence[int],
    offload_count: int,
    activation_bytes: int,
    other_bytes: int = 0,
    prefetch: int = 1,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> VramNeed:
    """need(n) of the module docstring, broken into its parts."""
    count = len(block_sizes)
    if not 0 <= offload_count <= count:
        raise ValueError(f"offload_count is {offload_count}; expected 0..{count} (the block count)")
    split = count - offload_count
    streamed = min(offload_count, prefetch + 1) * max(block_sizes[split:], default=0)
    return VramNeed(sum(block_sizes[:split]), streamed, other_bytes, activation_bytes, margin_bytes)


def plan_offload(
    block_sizes: Sequence[int],
    free_bytes: int,
    activation_bytes: int,
    other_bytes: int = 0,
    prefetch: int = 1,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> int:
    """The fewest blocks to offload (the last ones) so that need(n) <= free_bytes.

    `free_bytes` is the VRAM available before any of the model is placed on the GPU.
    Raises MemoryPlanError, with the numbers, when even offloading every block does not fit.
    """
    for offload_count in range(len(block_sizes) + 1):
        need = vram_need(block_sizes, offload_count, activation_bytes, other_bytes, prefetch, margin_bytes)
        if need.total <= free_bytes:
            return offload_count
    raise MemoryPlanError(
        f"the model does not fit in {format_bytes(free_bytes)} of free VRAM even with all {len(block_sizes)} blocks "
        f"offloaded: it needs {format_bytes(need.total)} ({format_bytes(need.streamed_blocks)} streamed blocks, "
        f"{format_bytes(need.other)} other weights, {format_bytes(need.activations)} activations, "
        f"{format_bytes(need.margin)} margin). Lower the resolution or the segment length (fewer tokens), or load the "
        "model in fp8."
    )


def format_bytes(count: int) -> str:
    """`count` bytes as GiB with two decimals, or MiB below 1 GiB."""
    return f"{count / GIB:.2f} GiB" if count >= GIB else f"{count / (1 << 20):.1f} MiB"


def resolve_offload_count(
    setting: int | str,
    block_sizes: Sequence[int],
    free_bytes: int | None = None,
    activation_bytes: int | None = None,
    other_bytes: int = 0,
    prefetch: int = 1,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> int:
    """The user's offload setting as a block count: an int is checked, "auto" is planned with `plan_offload`."""
    if setting == "auto":
        if free_bytes is None or activation_bytes is None:
            raise ValueError("offload 'auto' needs free_bytes and activation_bytes to plan with")
        return plan_offload(block_sizes, free_bytes, activation_bytes, other_bytes, prefetch, margin_bytes)
    if isinstance(setting, bool) or not isinstance(setting, int) or not 0 <= setting <= len(block_sizes):
        raise ValueError(f"offload blocks is {setting!r}; expected 'auto' or an integer 0..{len(block_sizes)}")
    return setting


def plan_offload_for_model(
    model: nn.Module,
    free_bytes: int,
    tokens: int,
    dtype: torch.dtype = torch.bfloat16,
    prefetch: int = 1,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> int:
    """`plan_offload` for a built DiT (`model.blocks`, `model.config.dim` / `ffn_dim`) running `tokens` tokens.

    `free_bytes`: VRAM available with none of the model on the GPU yet (see `token_count` for `tokens`).
    """
    sizes = block_bytes(model.blocks)
    other = module_bytes(model) - sum(sizes)
    activations = estimate_activation_bytes(tokens, model.config.dim, model.config.ffn_dim, dtype)
    return plan_offload(sizes, free_bytes, activations, other, prefetch, margin_bytes)


VAE_CHUNK_FRAMES = 4  # the VAE codes one latent frame (4 video frames) at a time
VAE_PEAK_FACTOR = 16  # peak bytes / one full-resolution feature map of the first stage: (dim, 4 frames, H, W)


def estimate_vae_bytes(
    vae_dim: int,
    frames: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    tile_pixels: int | None = None,
) -> int:
    """Peak VRAM of VAE-coding a `frames`-frame video of height x width (besides the VAE's weights).

    The VAE runs one chunk of 4 frames at a time; its largest activations are at full resolution, where a feature
    map has `vae_dim` channels (96 for the released VAE). The peak is VAE_PEAK_FACTOR such maps (residual input and
    output, normalised copy, causal-cache concatenation, padding and the convolution's workspace), which gives the
    ~21 GiB measured for an untiled float32 decode at 1280x720 (about half of it in bf16). With tiling
    (`tile_pixels` = tile side in pixels) the maps are one tile in size. The whole video, float32, is on the device
    too (input of an encode, output of a decode).
    """
    element = torch.empty((), dtype=dtype).element_size()
    tile_h, tile_w = (height, width) if tile_pixels is None else (min(tile_pixels, height), min(tile_pixels, width))
    feature_map = vae_dim * VAE_CHUNK_FRAMES * tile_h * tile_w * element
    video = 3 * frames * height * width * 4
    return int(VAE_PEAK_FACTOR * feature_map + video)


DEQUANT_BYTES_PER_VALUE = 16  # float32 temporaries of one GGUF dequantisation (codes, scaled, result) + the cast weight


def dequant_workspace_bytes(model: nn.Module) -> int:
    """Transient VRAM of dequantising the largest GGUF-quantised layer of `model` (0 without such layers); it is
    needed on top of the activations while that layer runs."""
    return max((DEQUANT_BYTES_PER_VALUE * m.in_features * m.out_features
                for m in model.modules() if isinstance(m, GGUFLinear)), default=0)


FP8_MATMUL_BYTES_PER_INPUT = 5  # quantising one input value: its float32 quotient and its e4m3 copy, held together


def fp8_matmul_activation_bytes(
    tokens: int, dim: int, ffn_dim: int, dtype: torch.dtype = torch.bfloat16, batch: int = 1
) -> int:
    """`estimate_activation_bytes` when the block Linears multiply in fp8 (`fp8.scaled_mm_linear`).

    Each such Linear first quantises its input [tokens, in]: `fp8.quantize_activation` holds the float32 quotient
    x / scale and its e4m3 copy at once (FP8_MATMUL_BYTES_PER_INPUT per value); `_scaled_mm`'s output is the size of
    F.linear's. Per token, with the stages of `estimate_activation_bytes`:
      attention stage: + 5 dim                  (q/k/v/o inputs are dim wide)
      FFN stage:       ffn_dim * (a GELU output + 5) in place of ffn_dim * 2a: the second Linear's input is the
                       GELU output, ffn_dim wide (the first Linear's output is freed by then)
    At 14B and 832x480x77 (32,760 tokens): 6.56 GiB instead of 5.62 GiB (FFN stage instead of attention stage).
    """
    a = torch.empty((), dtype=dtype).element_size()
    f = 4
    q = FP8_MATMUL_BYTES_PER_INPUT
    attention_stage = dim * (f + f + a + 3 * a + 3 * f + a) + q * dim
    ffn_stage = dim * (f + f + a) + ffn_dim * max(a + a, a + q)
    return int(batch * tokens * max(attention_stage, ffn_stage) * ACTIVATION_OVERHEAD)


def fp8_matmul_workspace_bytes(
    model: nn.Module, tokens: int, dim: int, ffn_dim: int, dtype: torch.dtype = torch.bfloat16
) -> int:
    """VRAM to reserve on top of `estimate_activation_bytes` for `model`'s fp8-matmul Linears (0 when none of its
    FP8Linears has `fp8_matmul` on, or `dtype` is not one it multiplies in fp8): `fp8_matmul_activation_bytes` minus
    the plain estimate."""
    in_use = any(isinstance(m, FP8Linear) and m.fp8_matmul for m in model.modules())
    if not in_use or dtype not in FP8_MATMUL_INPUT_DTYPES:
        return 0
    return (fp8_matmul_activation_bytes(tokens, dim, ffn_dim, dtype)
            - estimate_activation_bytes(tokens, dim, ffn_dim, dtype))
