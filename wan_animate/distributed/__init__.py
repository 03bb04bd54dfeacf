"""Sequence-parallel sampling over several GPUs (Ulysses, torch.distributed): library side, no ComfyUI."""
