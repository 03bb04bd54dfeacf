"""Block offloading: keep the last N transformer blocks in (pinned) host memory and stream each to the GPU just ahead
of its use, overlapping the copy with the computation of the blocks before it.

Which blocks: the LAST `offload_count`. The blocks run in order 0..L-1 every forward, so the first offloaded block
(L-N) is uploaded while the resident blocks before it compute, and no transfer is exposed at the start of a step;
offloading the first N instead would make block 0 wait for its own copy at every step. Between two forwards nothing
offloaded stays on the GPU (no prefetch crosses the end of a forward), so the sampler, CFG passes and the VAE see
only the resident weights.

How: forward pre/post hooks on every block, so the model code needs no change. Each offloaded block's parameters and
buffers (fp8 weights and their scale buffers included) are packed into one flat host buffer; an upload is one copy of
that buffer into one device buffer on a side CUDA stream, marked with an event. When block i starts (pre-hook), block
i is loaded if it was not prefetched, the next `prefetch` offloaded blocks start uploading, the compute stream waits
for block i's event, and the block's tensors are pointed at views of the device buffer. When block i ends
(post-hook), they are pointed back at the host buffer, the device buffer is freed for reuse once the compute stream
is past the block, and a "done" event is recorded. The hooks run when the CPU *enqueues* a block, usually far ahead
of the GPU; so that device buffers are reused instead of piling up, an upload first waits (on the CPU) for the done
events of released buffers until at most `prefetch + 1` offloaded blocks are live: on the device or still being read.

Enable offloading after the weights are final (loaded, LoRA merged): a layer that later replaces its Parameter or
buffer objects (e.g. `FP8Linear.set_weight`) is not seen by the packed copy; call `remove()` and offload again.

On CPU and other non-CUDA devices the same scheduling runs with synchronous copies, which is what the tests exercise.

Host memory: each offloaded block's buffer is an ordinary host allocation of exactly its packed size, page-locked in
place for the offloader's lifetime (see pinned.py: within the caller's `PinningPolicy`, pageable with a log line when
pinning fails). `remove()` unpins the buffers; the block's tensors stay views of them, so the memory is freed with the
model, and a later offloader over the same blocks reuses the buffers instead of packing a second copy.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .devices import resolve_device
from .pinned import CudaHostPinner, HostPinner, PinnedSet, PinningPolicy

ALIGN_BYTES = 64
EventCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class OffloadSchedule:
    """Which blocks are offloaded and which uploads start when each block begins."""

    num_blocks: int
    offload_count: int
    prefetch: int = 1

    def __post_init__(self):
        if not 0 <= self.offload_count <= self.num_blocks:
            raise ValueError(f"offload_count is {self.offload_count}; expected 0..{self.num_blocks} (the block count)")
        if self.prefetch < 0:
            raise ValueError(f"prefetch is {self.prefetch}; expected 0 or more blocks")

    @property
    def first_offloaded(self) -> int:
        return self.num_blocks - self.offload_count

    def is_offloaded(self, index: int) -> bool:
        return self.first_offloaded <= index < self.num_blocks

    def prefetch_targets(self, index: int) -> list[int]:
        """Offloaded blocks whose upload should be under way once block `index` starts (same forward only)."""
        stop = min(index + 1 + self.prefetch, self.num_blocks)
        return [j for j in range(index + 1, stop) if self.is_offloaded(j)]

    @property
    def max_resident_offloaded(self) -> int:
        """Most offloaded blocks on the device at once: the computing one plus its prefetches."""
        return min(self.offload_count, self.prefetch + 1)


@dataclass
class OffloadStats:
    uploads: int = 0  # all host -> device copies
    on_demand: int = 0  # copies issued only when their block started (transfer not hidden)
    peak_resident: int = 0  # most offloaded blocks on the device at once


class PackedBlock:
    """One module's parameters and buffers packed into a single flat uint8 host buffer.

    When the module's tensors already are views of one host buffer in this layout (packed by an earlier offloader),
    that buffer is reused as is: no copy, no second allocation.
    """

    def __init__(self, module: nn.Module):
        self.tensors = _unique_tensors(module)
        self.layout: list[tuple[int, int]] = []  # (byte offset, byte count) per tensor
        offset = 0
        for tensor in self.tensors:
            nbytes = tensor.numel() * tensor.element_size()
            self.layout.append((offset, nbytes))
            offset += -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES
        existing = self._packed_buffer(offset)
        self.reused = existing is not None
        self.host = existing if existing is not None else torch.empty(offset, dtype=torch.uint8)
        self.host_views = self.views(self.host)
        if not self.reused:
            with torch.no_grad():
                for tensor, view in zip(self.tensors, self.host_views):
                    view.copy_(tensor.detach())
            self.attach(self.host_views)

    def _packed_buffer(self, size: int) -> torch.Tensor | None:
        """The host buffer of `size` bytes the tensors are already laid out in, or None."""
        if not self.tensors or self.tensors[0].device.type != "cpu":
            return None
        storage = self.tensors[0].untyped_storage()
        base = storage.data_ptr()
        if storage.nbytes() != size:
            return None
        for tensor, (offset, _nbytes) in zip(self.tensors, self.layout):
            if (tensor.device.type != "cpu" or not tensor.is_contiguous()
                    or tensor.untyped_storage().data_ptr() != base or tensor.data_ptr() - base != offset):
                return None
        return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))

    @property
    def nbytes(self) -> int:
        return self.host.numel()

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each packed tensor as a view into `flat` (a buffer with the host buffer's layout, on any device)."""
        return [
            flat[offset:offset + nbytes].view(tensor.dtype).view(tensor.shape)
            for tensor, (offset, nbytes) in zip(self.tensors, self.layout)
        ]

    def attach(self, views: list[torch.Tensor]) -> None:
        """Point the module's tensors at `views` (the host buffer or a device copy of it)."""
        for tensor, view in zip(self.tensors, views):
            tensor.data = view


class BlockOffloader:
    """Streams the last `offload_count` of `blocks` from host memory to `device`, `prefetch` blocks ahead.

    Non-offloaded blocks are moved to `device` and stay there. `on_event(kind, index)` is called with kind "upload"
    (a prefetch started), "load" (an on-demand copy for a block that was not prefetched), "release" and "wait" (the
    CPU waited for the device to finish with released block `index` before uploading another).

    `pinning` (default: pin without a budget when `device` is CUDA) and `pinner` (default: cudaHostRegister on CUDA,
    none elsewhere) decide which host buffers are page-locked. If construction fails part way (out of memory moving
    a resident block, ...), the buffers pinned so far are unpinned before the error propagates; the caller moves the
    model back to the host.
    """

    def __init__(
        self,
        blocks: nn.ModuleList,
        device: str | torch.device,
        offload_count: int,
        prefetch: int = 1,
        on_event: EventCallback | None = None,
        pinning: PinningPolicy | None = None,
        pinner: HostPinner | None = None,
    ):
        self.blocks = blocks
        self.device = resolve_device(device)
        self.schedule = OffloadSchedule(len(blocks), offload_count, prefetch)
        self.stats = OffloadStats()
        self._on_event = on_event
        self._copier = _CudaCopier(self.device) if self.device.type == "cuda" else _SyncCopier(self.device)
        if pinner is None and self.device.type == "cuda":
            pinner = CudaHostPinner()
        self.pinned = PinnedSet(pinning or PinningPolicy(), pinner)
        self.packed: dict[int, PackedBlock] = {}
        self._on_device: dict[int, tuple[torch.Tensor, object]] = {}  # index -> (device buffer, ready event)
        self._retiring: deque[tuple[int, object]] = deque()  # (index, done event) of released device buffers
        self._hooks = []
        try:
            for index, block in enumerate(blocks):
                if self.schedule.is_offloaded(index):
                    self.packed[index] = PackedBlock(block)
                    self.pinned.pin(self.packed[index].host)
                else:
                    block.to(self.device)
        except BaseException:
            self.pinned.release()
            raise
        self.pinned.report()
        for index, block in enumerate(blocks):
            self._hooks.append(block.register_forward_pre_hook(self._make_pre_hook(index)))
            if self.schedule.is_offloaded(index):
                self._hooks.append(block.register_forward_hook(self._make_post_hook(index)))

    @property
    def offloaded_bytes(self) -> int:
        """Bytes of the host buffers holding the offloaded blocks."""
        return sum(p.nbytes for p in self.packed.values())

    @property
    def resident_indices(self) -> list[int]:
        """Offloaded blocks currently on the device (computing or prefetched)."""
        return sorted(self._on_device)

    def release_all(self) -> None:
        """Send every offloaded block back to host memory (e.g. after a forward was interrupted)."""
        for index in list(self._on_device):
            self._release(index)

    def remove(self) -> None:
        """Remove the hooks and unpin the host buffers; offloaded blocks stay in (now pageable) host memory."""
        self.release_all()
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._copier.synchronize()  # no copy may still read a buffer that is unpinned next
        self.pinned.release()

    def _make_pre_hook(self, index: int):
        def pre_hook(module, args):
            self._before_block(index)

        return pre_hook

    def _make_post_hook(self, index: int):
        def post_hook(module, args, output):
            self._release(index)

        return post_hook

    def _before_block(self, index: int) -> None:
        offloaded = self.schedule.is_offloaded(index)
        if offloaded and index not in self._on_device:
            self._upload(index, on_demand=True)
        for target in self.schedule.prefetch_targets(index):
            if target not in self._on_device:
                self._upload(target, on_demand=False)
        if offloaded:
            flat, ready = self._on_device[index]
            self._copier.wait(ready)
            packed = self.packed[index]
            packed.attach(packed.views(flat))

    def _upload(self, index: int, on_demand: bool) -> None:
        limit = self.schedule.max_resident_offloaded
        while self._retiring and len(self._on_device) + len(self._retiring) >= limit:
            retired, done = self._retiring.popleft()
            self._copier.wait_done(done)
            self._emit("wait", retired)
        self._on_device[index] = self._copier.upload(self.packed[index].host)
        self.stats.uploads += 1
        self.stats.on_demand += int(on_demand)
        self.stats.peak_resident = max(self.stats.peak_resident, len(self._on_device))
        self._emit("load" if on_demand else "upload", index)

    def _release(self, index: int) -> None:
        if index not in self._on_device:
            return
        flat, _ready = self._on_device.pop(index)
        packed = self.packed[index]
        packed.attach(packed.host_views)
        self._copier.release(flat)
        del flat  # the last reference: the allocator frees it now, reusable once the compute stream is past here
        self._retiring.append((index, self._copier.done_event()))
        self._emit("release", index)

    def _emit(self, kind: str, index: int) -> None:
        if self._on_event is not None:
            self._on_event(kind, index)


def enable_block_offload(
    model: nn.Module,
    device: str | torch.device,
    offload_count: int,
    prefetch: int = 1,
    on_event: EventCallback | None = None,
    pinning: PinningPolicy | None = None,
    pinner: HostPinner | None = None,
) -> BlockOffloader:
    """Offload the last `offload_count` of `model.blocks`; everything else of the model is moved to `device`.

    Tensors the model keeps as plain attributes (not parameters or buffers) are not moved. `pinning` / `pinner` as
    for `BlockOffloader`.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"enable_block_offload needs a model with an nn.ModuleList `blocks`; found {type(blocks)}")
    device = resolve_device(device)
    for child in model.children():
        if child is not blocks:
            child.to(device)
    for param in model.parameters(recurse=False):
        param.data = param.data.to(device)
    for name, buffer in model.named_buffers(recurse=False):
        setattr(model, name, buffer.to(device))
    return BlockOffloader(blocks, device, offload_count, prefetch, on_event, pinning, pinner)


class _SyncCopier:
    """Plain synchronous copies (CPU and non-CUDA devices): same scheduling, nothing to overlap."""

    def __init__(self, device: torch.device):
        self.device = device

    def upload(self, host: torch.Tensor) -> tuple[torch.Tensor, None]:
        return host.to(self.device, copy=True), None

    def wait(self, ready: None) -> None:
        return None

    def release(self, flat: torch.Tensor) -> None:
        return None

    def done_event(self) -> None:
        return None

    def wait_done(self, done: None) -> None:
        return None

    def synchronize(self) -> None:
        return None


class _CudaCopier:
    """Copies on a side stream; the compute stream waits on an event; freed buffers wait for the compute stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def upload(self, host: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
        with torch.cuda.stream(self.stream):
            flat = torch.empty(host.shape, dtype=host.dtype, device=self.device)
            flat.copy_(host, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return flat, ready

    def wait(self, ready: torch.cuda.Event) -> None:
        torch.cuda.current_stream(self.device).wait_event(ready)

    def release(self, flat: torch.Tensor) -> None:
        # the buffer was allocated on the side stream but read by the compute stream: keep it out of reuse until
        # the compute stream's queued work is done
        flat.record_stream(torch.cuda.current_stream(self.device))

    def done_event(self) -> torch.cuda.Event:
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        return done

    def wait_done(self, done: torch.cuda.Event) -> None:
        done.synchronize()

    def synchronize(self) -> None:
        self.stream.synchronize()


def _unique_tensors(module: nn.Module) -> list[torch.Tensor]:
    seen: set[int] = set()
    tensors = []
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors.append(tensor)
    return tensors
