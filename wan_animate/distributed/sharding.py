"""How one forward's video tokens are split over the ranks of a sequence-parallel group.

Tokens are frame-major (frame, row, column). Rank r holds the contiguous range [r * chunk, (r + 1) * chunk) of the
sequence zero-padded to chunk * world tokens, chunk = ceil(L / world): uneven lengths work, the last ranks carry the
padding. A range may start or end inside a latent frame; `frame_runs` says which frame each local token belongs to so
that the face adapter's frame-local attention and the per-token RoPE positions stay those of the full sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TokenShard:
    """Rank `rank` of `world`'s share of a sequence of `tokens` tokens, `tokens_per_frame` per latent frame."""

    tokens: int
    tokens_per_frame: int
    rank: int
    world: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside a group of {self.world}")
        if self.tokens % self.tokens_per_frame:
            raise ValueError(f"{self.tokens} tokens do not split into frames of {self.tokens_per_frame}")

    @property
    def chunk(self) -> int:
        """Tokens per rank, padding included."""
        return math.ceil(self.tokens / self.world)

    @property
    def padded(self) -> int:
        return self.chunk * self.world

    @property
    def start(self) -> int:
        return self.rank * self.chunk

    @property
    def stop(self) -> int:
        """End of this rank's real tokens (<= start + chunk; == start when it holds padding only)."""
        return max(self.start, min(self.start + self.chunk, self.tokens))

    def take(self, full: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's slice of a full-sequence tensor along `dim`, zero-padded to `chunk`."""
        local = full.narrow(dim, self.start, self.stop - self.start)
        missing = self.chunk - local.shape[dim]
        if missing == 0:
            return local
        pad = [0, 0] * (full.ndim - 1 - dim) + [0, missing]
        return F.pad(local, pad)

    def frame_runs(self) -> list[tuple[int, int, int, int]]:
        """(local start, local stop, first frame, frame count) of each run of this rank's real tokens.

        Whole frames are merged into one run; a frame cut by the range boundary is a run of its own.
        """
        size = self.tokens_per_frame
        runs: list[tuple[int, int, int, int]] = []
        position = self.start
        while position < self.stop:
            frame = position // size
            if position % size == 0 and self.stop - position >= size:
                count = (self.stop - position) // size
                end = position + count * size
            else:
                count = 1
                end = min((frame + 1) * size, self.stop)
            runs.append((position - self.start, end - self.start, frame, count))
            position = end
        return runs
