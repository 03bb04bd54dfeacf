"""Load the Wan2.1 VAE from ComfyUI's `wan_2.1_vae.safetensors` or the official `Wan2.1_VAE.pth`.

Both use the official key names (`encoder.*`, `decoder.*`, `conv1.*`, `conv2.*`); a common prefix such as
`first_stage_model.` or `vae.` is removed. The configuration is read from the tensor shapes.
"""
from __future__ import annotations

import torch

from ..model.vae import WanVAE, infer_vae_config
from .keys import WAN_VAE, reject_other_kind
from .state_dict import checkpoint_key_names, load_state_dict, strip_prefix

VAE_PREFIXES = ("first_stage_model.", "vae.", "model.")
VAE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def load_vae(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> WanVAE:
    """Read a Wan2.1 VAE checkpoint into an eval-mode `WanVAE` on `device` with weights in `dtype`."""
    if dtype not in VAE_DTYPES:
        raise ValueError(f"VAE dtype must be one of {[str(d) for d in VAE_DTYPES]}; found {dtype}")
    reject_other_kind(checkpoint_key_names(path), WAN_VAE)  # before reading any tensor: a 30 GB DiT is refused at once
    state = strip_prefix(load_state_dict(path, device=device, dtype=dtype), VAE_PREFIXES)
    reject_other_kind(list(state), WAN_VAE)
    if "encoder.conv1.weight" not in state:
        raise ValueError(f"{path} is not a Wan VAE checkpoint in the official key layout: no 'encoder.conv1.weight' "
                         f"(first keys: {sorted(state)[:4]})")
    return vae_from_state_dict(state, source=path)


def vae_from_state_dict(state: dict[str, torch.Tensor], source: str = "state dict") -> WanVAE:
    """Build a `WanVAE` around `state` (official key names), checking every key and shape."""
    config = infer_vae_config(state)
    with torch.device("meta"):
        vae = WanVAE(config)
    check_vae_keys(vae, state, source)
    vae.load_state_dict(state, assign=True)
    return vae.eval().requires_grad_(False)


def check_vae_keys(vae: WanVAE, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise ValueError naming the missing, unexpected and wrong-shape keys of `state` for `vae`."""
    expected = {key: tuple(value.shape) for key, value in vae.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {shape}"
        for key, shape in sorted(expected.items())
        if key in state and tuple(state[key].shape) != shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label} keys: {shown}")
    if problems:
        raise ValueError(f"{source} does not match the Wan2.1 VAE ({vae.config}): " + "; ".join(problems))
