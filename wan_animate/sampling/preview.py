"""Cheap previews of latents during sampling: a fixed linear map from the 16 Wan2.1 latent channels to RGB."""
from __future__ import annotations

import numpy as np
import torch

# Least-squares fit of RGB on normalised Wan2.1 latents (the published latent-to-RGB factors of the Wan2.1 VAE).
WAN21_LATENT_RGB = torch.tensor([
    [-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747], [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665], [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364], [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950], [0.1984, 0.0913, 0.1861],
])
WAN21_LATENT_RGB_BIAS = torch.tensor([-0.1835, -0.0868, -0.3360])


def latent_preview(latent: torch.Tensor, frame: int = -1) -> np.ndarray:
    """One latent frame of [16, T, h, w] (normalised) -> uint8 RGB [h, w, 3]."""
    if latent.ndim != 4 or latent.shape[0] != WAN21_LATENT_RGB.shape[0]:
        raise ValueError(f"latent: expected [16, T, h, w]; got {tuple(latent.shape)}")
    picked = latent[:, frame].float().cpu()  # [16, h, w]
    rgb = torch.einsum("chw,cr->hwr", picked, WAN21_LATENT_RGB) + WAN21_LATENT_RGB_BIAS
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
