"""Expected speed-up of Ulysses sequence parallelism for the 14B DiT from its FLOPs and all-to-all volume.

Per step and block, every rank runs 4 all-to-alls (q, k, v before self-attention, the output after it), each over
its L/N tokens x dim values, of which it sends the fraction (N-1)/N to the other ranks:
    bytes sent per rank per step = blocks * 4 * (L / N) * dim * bytes * (N - 1) / N
    t_N = t_1 / N + bytes sent per rank per step / link bandwidth per direction      (no compute/comm overlap)
t_1 is the measured one-GPU step time scaled by FLOPs from the measured size to the target size.

  python benchmarks/sequence_parallel_estimate.py        # prints the Markdown table of benchmarks/README.md
"""
from __future__ import annotations

DIM, FFN, BLOCKS, CONTEXT_TOKENS = 5120, 13824, 40, 512 + 257
MEASURED_TOKENS, MEASURED_S = 32_760, 3.914  # H100 SXM, 832x480x77, bf16 (benchmarks/README.md, DiT step (a))
BYTES = 2  # bf16
LINKS = {"NVLink (H100 SXM, 450 GB/s)": 450e9, "PCIe Gen5 x16 (~50 GB/s)": 50e9, "PCIe Gen4 x16 (~25 GB/s)": 25e9}


def tokens(width: int, height: int, frames: int) -> int:
    """Video tokens of one segment: (1 reference + (frames - 1) / 4 + 1 latent frames) x (h / 16) x (w / 16)."""
    return ((frames - 1) // 4 + 2) * (height // 16) * (width // 16)


def step_flops(length: int) -> float:
    """Multiply-adds x 2 of one forward: projections, cross-attention, FFN and self-attention per token per block."""
    per_token = 2 * (4 * DIM**2 + 2 * DIM**2 + 2 * DIM * FFN + 2 * CONTEXT_TOKENS * DIM + 2 * length * DIM)
    return per_token * length * BLOCKS


def alltoall_bytes(length: int, world: int) -> float:
    return BLOCKS * 4 * (length / world) * DIM * BYTES * (world - 1) / world


def main() -> None:
    length = tokens(1280, 720, 77)
    t1 = MEASURED_S * step_flops(length) / step_flops(MEASURED_TOKENS)
    print(f"1280x720x77: {length} tokens, {step_flops(length) / 1e15:.2f} PFLOP per step, t_1 = {t1:.1f} s\n")
    print("| GPUs | sent per rank per step | link | communication s/step | compute s/step | s/step | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for world in (2, 4, 8):
        sent = alltoall_bytes(length, world)
        for name, bandwidth in LINKS.items():
            comm = sent / bandwidth
            total = t1 / world + comm
            print(f"| {world} | {sent / 1e9:.1f} GB | {name} | {comm:.2f} | {t1 / world:.2f} | {total:.2f} | "
                  f"**{t1 / total:.2f}x** |")


if __name__ == "__main__":
    main()
