"""A loaded DiT shared between graph nodes: which file, how it is stored and run, which LoRAs are on it.

ComfyUI passes the same handle from the loader node to LoRA nodes and the sampler. LoRA nodes do not touch weights:
they return a handle that asks for one more LoRA. The sampler calls `activate`, which loads the model once, brings
the LoRAs on it in line with what the handle asks for, places it on the device (resident, or with its last blocks
streamed from host memory), and afterwards parks it back in host memory.

LoRAs are applied at run time (`apply_loras(..., runtime=True)`): the Linear weights read from the file are never
written, so a handle with another stack (other strengths, a LoRA removed or added) switches by detaching and
attaching LoRA factors; the checkpoint is read once and one copy of the model exists in host memory. The LoRA files
of the current stack stay parsed in memory, so a strength change reads no file at all.
"""
from __future__ import annotations

from collections.abc import Iterator
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from ..model.dit import WanAnimateDiT
from ..runtime.attention import attention_backend
from ..runtime.compile import compile_blocks, is_compiled, uncompile_blocks
from ..runtime.devices import free_memory_bytes, release_cached_memory
from ..runtime.fp8 import device_has_fp8_matmul, set_fp8_matmul
from ..runtime.memory import (MemoryPlanError, block_bytes, dequant_workspace_bytes, estimate_activation_bytes,
                              fp8_matmul_workspace_bytes, module_bytes, resolve_offload_count, vram_need)
from ..runtime.offload import BlockOffloader, enable_block_offload
from ..runtime.oom import explain_oom
from ..runtime.pinned import PinningPolicy
from ..pipeline.resume import file_identity
from .dit import _expand_shard, load_dit
from .lora import LoRA, load_lora
from .lora_apply import apply_loras, remove_all_loras
from .state_dict import checkpoint_files

log = logging.getLogger(__name__)
STORAGE = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn}


def _changed_on_disk(path: str, identity: dict) -> bool:
    try:
        return file_identity(path) != identity
    except FileNotFoundError:
        return True


@dataclass(frozen=True)
class DiTOptions:
    """How the DiT is stored and run. offload: "auto" or the number of blocks streamed from host memory (per GPU).

    gpus > 1: sampling runs in that many worker processes, one per GPU, splitting each step's tokens between them
    (wan_animate.distributed).
    fp8_matmul: fp8-stored (e4m3) layers multiply in fp8 on GPUs that have it (see runtime/fp8.py).
    keep_on_device: a model that ran fully resident (no block offloading) stays on the GPU after `activate` instead
    of being parked in host memory; `park()` moves it back (the host's memory management calls it to evict).
    shard_weights (gpus > 1): "on" shards each transformer block's weights over the workers (FSDP2), "off" replicates
    them, "auto" shards on GPUs when the whole model does not fit (wan_animate.distributed.weight_sharding); sharding
    needs 16/32-bit float weights, offload 0 or "auto" (then ignored), no compile, and no LoRAs.
    """

    dtype: torch.dtype = torch.bfloat16
    storage: str = "default"
    attention: str = "sdpa"
    offload: int | str = 0
    prefetch: int = 1
    compile: bool = False
    gpus: int = 1
    fp8_matmul: bool = False
    keep_on_device: bool = True
    shard_weights: str = "auto"

    def __post_init__(self) -> None:
        if self.shard_weights not in ("auto", "on", "off"):
            raise ValueError(f"shard_weights is {self.shard_weights!r}; expected 'auto', 'on' or 'off'")
        if self.shard_weights == "on" and not self.can_shard_weights:
            raise ValueError("shard_weights 'on' needs weight storage 'default', offload 0 or 'auto' and compile "
                             f"off (found storage {self.storage!r}, offload {self.offload!r}, compile {self.compile})")
        if self.storage not in STORAGE:
            raise ValueError(f"weight storage is {self.storage!r}; expected one of {sorted(STORAGE)}")
        if self.gpus < 1:
            raise ValueError(f"gpus is {self.gpus}; expected 1 or more")

    @property
    def can_shard_weights(self) -> bool:
        """Whether these options allow FSDP2 weight sharding (plain floating-point weights, all on the GPU)."""
        return self.storage == "default" and self.offload in (0, "auto") and not self.compile


@dataclass
class _Loaded:
    """The model behind every handle of one loader output, and the LoRAs currently applied to it."""

    model: WanAnimateDiT | None = None
    loras: tuple[tuple[str, float], ...] = ()
    lora_summary: str = ""
    lora_files: dict[str, tuple[dict, LoRA]] = field(default_factory=dict)  # path -> (file identity, parsed LoRA)


@dataclass(frozen=True)
class DiTHandle:
    """A DiT file plus options and a LoRA stack; handles made by `with_lora` share the loaded model."""

    path: str
    options: DiTOptions = DiTOptions()
    loras: tuple[tuple[str, float], ...] = ()
    _shared: _Loaded = field(default_factory=_Loaded, compare=False, repr=False)

    def with_lora(self, path: str, strength: float) -> "DiTHandle":
        """A handle asking for the same model with one more LoRA on top."""
        return replace(self, loras=self.loras + ((path, float(strength)),))

    def model(self) -> WanAnimateDiT:
        """The model in host memory, loaded on first use."""
        if self._shared.model is None:
            storage = STORAGE[self.options.storage]
            self._shared.model = load_dit(self.path, device="cpu", dtype=self.options.dtype, storage_dtype=storage)
            set_fp8_matmul(self._shared.model, self.options.fp8_matmul)
        return self._shared.model

    def sync_loras(self) -> str:
        """Make the model carry exactly this handle's LoRAs; returns a summary of what they changed.

        A different stack, or a LoRA file changed on disk since it was applied, is switched exactly: the current
        LoRAs are detached (their merged small targets restored from their originals), this handle's attached.
        Neither reloads the model.
        """
        shared = self._shared
        model = self.model()
        if self._lora_change_pending():
            remove_all_loras(model)
            shared.loras, shared.lora_summary = (), ""
            if self.loras:
                loras = [(self._lora(path), strength) for path, strength in self.loras]
                shared.lora_summary = apply_loras(model, loras, runtime=True).summary()
                log.info("LoRAs applied:\n%s", shared.lora_summary)
            shared.lora_files = {path: shared.lora_files[path] for path, _ in self.loras}
            shared.loras = self.loras
        return shared.lora_summary

    def _lora_change_pending(self) -> bool:
        """Whether the model carries another stack than this handle's, or a LoRA file changed since it was applied."""
        wanted = {path for path, _ in self.loras}
        changed_files = any(_changed_on_disk(path, identity) for path, (identity, _) in self._shared.lora_files.items()
                            if path in wanted)
        return self._shared.loras != self.loras or changed_files

    def _lora(self, path: str) -> LoRA:
        """The parsed LoRA file, read again only when the file changed since it was parsed."""
        identity = file_identity(path)
        cached = self._shared.lora_files.get(path)
        if cached is None or cached[0] != identity:
            cached = (identity, load_lora(path))
            self._shared.lora_files[path] = cached
        return cached[1]

    def identity(self) -> dict[str, object]:
        """What determines this handle's model: the checkpoint files' identities, dtype, storage and the LoRA stack
        (each file's identity and strength); for resume keys."""
        return {
            "files": [file_identity(f) for f in checkpoint_files(_expand_shard(self.path))],
            "dtype": str(self.options.dtype),
            "storage": self.options.storage,
            "loras": [{"file": file_identity(path), "strength": strength} for path, strength in self.loras],
        }

    def release(self) -> None:
        """Forget the loaded model (ComfyUI unloaded the node's output)."""
        self._shared.model = None
        self._shared.loras = ()
        self._shared.lora_summary = ""
        self._shared.lora_files = {}
        release_cached_memory()

    def park(self) -> None:
        """Move the loaded model (if any) to host memory and release the GPU's cached blocks."""
        model = self._shared.model
        if model is not None and model.device.type != "cpu":
            self._park(model, model.device, None)

    def is_resident(self, device: torch.device | str) -> bool:
        """Whether the loaded model sits on `device` (kept there after the previous run)."""
        device = torch.device(device)
        model = self._shared.model
        return model is not None and model.device.type == device.type \
            and (model.device.index or 0) == (device.index or 0)

    @contextmanager
    def activate(
        self,
        device: torch.device | str,
        tokens: int,
        workspace_bytes: int = 0,
        pinning: PinningPolicy | None = None,
    ) -> Iterator[WanAnimateDiT]:
        """The model with its LoRAs, ready to run `tokens`-token forwards on `device`; parked in host memory after,
        unless `options.keep_on_device` and it ran fully resident (then `park()` moves it back).

        `workspace_bytes`: peak VRAM of other work done while the model is placed (the VAE coding between
        segments); the offload plan reserves the larger of it and the DiT's activations. `pinning`: how offloaded
        blocks may use page-locked host memory (ComfyUI's switch and budget; default: pin without a limit).
        If placing fails (out of GPU or host memory), everything placed so far is moved back before the error
        propagates, so device memory is back where it was and the next run starts clean.
        """
        device = torch.device(device)
        model = self.model()
        kept = device.type == "cuda" and self.is_resident(device)
        if kept and (self._lora_change_pending()
                     or free_memory_bytes(device) < self._reserve_bytes(model, device, tokens, workspace_bytes)):
            self.park()  # LoRAs are switched in host memory; a kept model short of room is planned afresh
        self.sync_loras()
        offloader = None
        if device.type == "cuda" and self.is_resident(device):
            if self.options.compile and not is_compiled(model.blocks[0]):
                compile_blocks(model.blocks, device=device)
        else:
            offloader = self._place(model, device, tokens, workspace_bytes, pinning)
        try:
            with attention_backend(self.options.attention):
                yield model
        finally:
            if device.type == "cuda" and self.options.keep_on_device and offloader is None:
                if not self.options.compile and is_compiled(model.blocks[0]):
                    uncompile_blocks(model.blocks)
            else:
                self._park(model, device, offloader)

    def fits(self, device: torch.device | str, tokens: int, workspace_bytes: int = 0) -> bool:
        """Whether the model, placed as the options say, leaves room for `tokens`-token forwards and
        `workspace_bytes` of other work in the free memory of CUDA `device`."""
        device = torch.device(device)
        model = self.model()
        sizes = block_bytes(model.blocks)
        try:
            count = self._offload_count(model, device, tokens, workspace_bytes)
        except MemoryPlanError:
            return False
        need = vram_need(sizes, count, self._reserve_bytes(model, device, tokens, workspace_bytes),
                         module_bytes(model) - sum(sizes), self.options.prefetch)
        kept_bytes = module_bytes(model) if self.is_resident(device) else 0  # its weights already hold that memory
        return need.total <= free_memory_bytes(device) + kept_bytes

    def _place(
        self, model: WanAnimateDiT, device: torch.device, tokens: int, workspace_bytes: int,
        pinning: PinningPolicy | None,
    ) -> BlockOffloader | None:
        offloader = None
        settings = {"offload_blocks": self.options.offload, "weight_storage": self.options.storage, "tokens": tokens}
        try:
            with explain_oom("placing the model on the GPU", settings, free=_nothing, device=device):
                if device.type == "cuda":
                    count = self._offload_count(model, device, tokens, workspace_bytes)
                    if count == 0:
                        model.to(device)
                    else:
                        offloader = enable_block_offload(model, device, count, self.options.prefetch,
                                                         pinning=pinning)
                if self.options.compile and not is_compiled(model.blocks[0]):
                    compile_blocks(model.blocks, device=device)
        except BaseException as error:
            self._park(model, device, offloader)
            if isinstance(error, RuntimeError) and _HOST_OOM in str(error):
                raise RuntimeError(
                    f"Out of host memory while preparing {self.options.offload} offloaded transformer blocks "
                    f"({error}). Offload fewer blocks (offload_blocks), store the weights in fp8 (weight_storage), "
                    "or close other programs.") from error
            raise
        return offloader

    def _park(self, model: WanAnimateDiT, device: torch.device, offloader: BlockOffloader | None) -> None:
        """Undo `_place`: hooks removed, host buffers unpinned, every tensor back in host memory, cache emptied."""
        if offloader is not None:
            offloader.remove()
        if device.type == "cuda":
            model.to("cpu")
            release_cached_memory()
        if not self.options.compile and is_compiled(model.blocks[0]):
            uncompile_blocks(model.blocks)

    def _reserve_bytes(self, model: WanAnimateDiT, device: torch.device, tokens: int, workspace_bytes: int) -> int:
        """VRAM kept free for work besides the weights: the DiT's activations (with the dequantisation of a GGUF
        layer, or the input quantisation of an fp8-matmul layer where `device` multiplies in fp8) or
        `workspace_bytes`, the larger."""
        config = model.config
        activations = estimate_activation_bytes(tokens, config.dim, config.ffn_dim, self.options.dtype)
        activations += dequant_workspace_bytes(model)
        quantised_inputs = fp8_matmul_workspace_bytes(model, tokens, config.dim, config.ffn_dim, self.options.dtype)
        if quantised_inputs and device.type == "cuda" and device_has_fp8_matmul(device):
            activations += quantised_inputs
        return max(activations, workspace_bytes)

    def _offload_count(self, model: WanAnimateDiT, device: torch.device, tokens: int, workspace_bytes: int) -> int:
        sizes = block_bytes(model.blocks)
        return resolve_offload_count(
            self.options.offload,
            sizes,
            free_bytes=free_memory_bytes(device),
            activation_bytes=self._reserve_bytes(model, device, tokens, workspace_bytes),
            other_bytes=module_bytes(model) - sum(sizes),
            prefetch=self.options.prefetch,
        )


_HOST_OOM = "can't allocate memory"  # the message of PyTorch's CPU allocator when host memory runs out


def _nothing() -> None:
    """`explain_oom`'s free step when the caller frees memory itself (after moving the model back)."""
