"""A loaded DiT shared between graph nodes: which file, how it is stored and run, which LoRAs are on it.

ComfyUI passes the same handle from the loader node to LoRA nodes and the sampler. LoRA nodes do not touch weights:
they return a handle that asks for one more LoRA. The sampler calls `activate`, which loads the model once, brings
the LoRAs on it in line with what the handle asks for (reloading it when a different stack was merged), places it on
the device (resident, or with its last blocks streamed from host memory), and afterwards parks it back in host memory.
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
from ..runtime.fp8 import set_fp8_matmul
from ..runtime.memory import block_bytes, estimate_activation_bytes, module_bytes, resolve_offload_count
from ..runtime.offload import enable_block_offload
from .dit import load_dit
from .lora import load_lora
from .lora_apply import apply_loras

log = logging.getLogger(__name__)
STORAGE = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn}


@dataclass(frozen=True)
class DiTOptions:
    """How the DiT is stored and run. offload: "auto" or the number of blocks streamed from host memory.
    fp8_matmul: fp8-stored (e4m3) layers multiply in fp8 on GPUs that have it (see runtime/fp8.py).
    keep_on_device: a model that ran fully resident (no block offloading) stays on the GPU after `activate` instead
    of being parked in host memory; `park()` moves it back (the host's memory management calls it to evict)."""

    dtype: torch.dtype = torch.bfloat16
    storage: str = "default"
    attention: str = "sdpa"
    offload: int | str = 0
    prefetch: int = 1
    compile: bool = False
    fp8_matmul: bool = False
    keep_on_device: bool = True

    def __post_init__(self) -> None:
        if self.storage not in STORAGE:
            raise ValueError(f"weight storage is {self.storage!r}; expected one of {sorted(STORAGE)}")


@dataclass
class _Loaded:
    """The model behind every handle of one loader output, and the LoRAs currently merged into it."""

    model: WanAnimateDiT | None = None
    loras: tuple[tuple[str, float], ...] = ()
    lora_summary: str = ""


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

        LoRAs are merged without keeping a copy of the original weights (for the 14B model that copy would take tens
        of GB of host memory), so a stack that differs from the one merged reloads the model from its file first.
        """
        if self._shared.loras != self.loras:
            if self._shared.loras:
                self._shared.model = None
            self._shared.loras, self._shared.lora_summary = (), ""
            model = self.model()
            if self.loras:
                loras = [(load_lora(path), strength) for path, strength in self.loras]
                self._shared.lora_summary = apply_loras(model, loras, keep_originals=False).summary()
                log.info("LoRAs applied:\n%s", self._shared.lora_summary)
            self._shared.loras = self.loras
        return self._shared.lora_summary

    def release(self) -> None:
        """Forget the loaded model (ComfyUI unloaded the node's output)."""
        self._shared.model = None
        self._shared.loras = ()
        release_cached_memory()

    def park(self) -> None:
        """Move the loaded model (if any) to host memory and release the GPU's cached blocks."""
        if self._shared.model is not None and self._shared.model.device.type != "cpu":
            self._shared.model.to("cpu")
            release_cached_memory()

    def is_resident(self, device: torch.device | str) -> bool:
        """Whether the loaded model sits on `device` (kept there after the previous run)."""
        device = torch.device(device)
        model = self._shared.model
        return model is not None and model.device.type == device.type \
            and (model.device.index or 0) == (device.index or 0)

    @contextmanager
    def activate(self, device: torch.device | str, tokens: int) -> Iterator[WanAnimateDiT]:
        """The model with its LoRAs, ready to run `tokens`-token forwards on `device`; parked in host memory after,
        unless `options.keep_on_device` and it ran fully resident."""
        model = self.model()
        self.sync_loras()
        model = self.model()  # a LoRA stack change reloads it
        device = torch.device(device)
        offloader = None
        if device.type == "cuda" and self.is_resident(device) and free_memory_bytes(device) < estimate_activation_bytes(
                tokens, model.config.dim, model.config.ffn_dim, self.options.dtype):
            self.park()  # kept from a smaller run; plan this one from host memory
        if device.type == "cuda" and not self.is_resident(device):
            offloader = self._place_on_gpu(model, device, tokens)
        if self.options.compile and not is_compiled(model.blocks[0]):
            compile_blocks(model.blocks)
        try:
            with attention_backend(self.options.attention):
                yield model
        finally:
            if offloader is not None:
                offloader.remove()
            if device.type == "cuda" and not (self.options.keep_on_device and offloader is None):
                self.park()
            if not self.options.compile and is_compiled(model.blocks[0]):
                uncompile_blocks(model.blocks)

    def _place_on_gpu(self, model: WanAnimateDiT, device: torch.device, tokens: int):
        config = model.config
        sizes = block_bytes(model.blocks)
        count = resolve_offload_count(
            self.options.offload,
            sizes,
            free_bytes=free_memory_bytes(device),
            activation_bytes=estimate_activation_bytes(tokens, config.dim, config.ffn_dim, self.options.dtype),
            other_bytes=module_bytes(model) - sum(sizes),
            prefetch=self.options.prefetch,
        )
        if count == 0:
            model.to(device)
            return None
        return enable_block_offload(model, device, count, self.options.prefetch)
