"""Page-locking ("pinning") host buffers in place, within a budget, so host -> GPU copies can run asynchronously.

Buffers are ordinary host allocations registered with `cudaHostRegister` rather than allocated with
`pin_memory=True`: PyTorch's pinned allocator rounds every allocation up to a power of two and keeps the memory in
its cache after the tensors are gone, while a registered buffer costs exactly its size and is an ordinary allocation
again once unregistered (freed with its tensors). When registering fails or the budget is used up, the buffer stays
pageable (copies from it are synchronous but correct) and one log line says so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

log = logging.getLogger(__name__)
_CUDA_HOST_REGISTER_PORTABLE = 1  # cudaHostRegisterPortable: pinned for every CUDA context


@dataclass(frozen=True)
class PinningPolicy:
    """Whether offloaded weights may be pinned, and at most how many bytes (None: no limit of ours)."""

    enabled: bool = True
    budget_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.budget_bytes is not None and self.budget_bytes < 0:
            raise ValueError(f"pinned memory budget is {self.budget_bytes} bytes; expected >= 0 or None")


class HostPinner(Protocol):
    """Registers host buffers as page-locked memory; `register` returns an error text, or None on success."""

    def register(self, buffer: torch.Tensor) -> str | None: ...

    def unregister(self, buffer: torch.Tensor) -> None: ...


class CudaHostPinner:
    """`cudaHostRegister` / `cudaHostUnregister` through PyTorch's CUDA runtime bindings."""

    def register(self, buffer: torch.Tensor) -> str | None:
        cudart = torch.cuda.cudart()
        status = cudart.cudaHostRegister(buffer.data_ptr(), buffer.nbytes, _CUDA_HOST_REGISTER_PORTABLE)
        if int(status) != 0:
            return f"cudaHostRegister returned error {int(status)}"
        return None

    def unregister(self, buffer: torch.Tensor) -> None:
        status = torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())
        if int(status) != 0:
            log.warning("cudaHostUnregister returned error %d for a %d-byte offload buffer", int(status),
                        buffer.nbytes)


class PinnedSet:
    """The host buffers pinned for one offloader; `release` unpins all of them (the buffers stay valid)."""

    def __init__(self, policy: PinningPolicy, pinner: HostPinner | None):
        self.policy = policy
        self.pinner = pinner
        self.buffers: list[torch.Tensor] = []
        self.pinned_bytes = 0
        self.pageable_bytes = 0
        self._reasons: list[str] = []

    def pin(self, buffer: torch.Tensor) -> bool:
        """Pin `buffer` if the policy and budget allow and registering works; whether it is pinned now."""
        if self.pinner is None or not self.policy.enabled:
            self.pageable_bytes += buffer.nbytes
            return False
        budget = self.policy.budget_bytes
        if budget is not None and self.pinned_bytes + buffer.nbytes > budget:
            return self._pageable(buffer, f"the pinned-memory budget of {budget / (1 << 30):.2f} GiB is used up")
        error = self.pinner.register(buffer)
        if error is not None:
            return self._pageable(buffer, error)
        self.buffers.append(buffer)
        self.pinned_bytes += buffer.nbytes
        return True

    def report(self) -> None:
        """Log once how much stayed pageable and why (nothing when everything was pinned or pinning is off)."""
        if self._reasons:
            log.warning(
                "Offloaded blocks: %.2f GiB pinned, %.2f GiB left in pageable host memory (%s); block copies from "
                "pageable memory are synchronous and slower.",
                self.pinned_bytes / (1 << 30), self.pageable_bytes / (1 << 30), "; ".join(dict.fromkeys(self._reasons)))

    def release(self) -> None:
        """Unpin every buffer pinned here."""
        while self.buffers:
            buffer = self.buffers.pop()
            self.pinner.unregister(buffer)
            self.pinned_bytes -= buffer.nbytes

    def _pageable(self, buffer: torch.Tensor, reason: str) -> bool:
        self.pageable_bytes += buffer.nbytes
        self._reasons.append(reason)
        return False
