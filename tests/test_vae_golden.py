"""Golden parity of the Wan2.1 VAE with the official implementation (golden `vae/` section).

Tolerance (golden README): max |ours - golden| <= 1e-4 * max(1, max |golden|), float32.
Measured on the shared set (dim 16, 9 frames of 64x64): latent 1.6e-6, recon 3.5e-6 (untiled; tiling is not part
of the official maths and is tested separately).
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_close_golden, golden_section
from wan_animate.loading.vae import load_vae
from wan_animate.model.vae_config import infer_vae_config

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    root = golden_section("vae")
    meta = json.loads((root / "meta.json").read_text())
    vae = load_vae(str(root / "weights.safetensors"), device="cpu", dtype=torch.float32)
    vae.set_latent_stats(meta["latent_mean"], meta["latent_std"])
    inputs = load_file(str(root / "inputs.safetensors"))
    outputs = load_file(str(root / "outputs.safetensors"))
    return vae, meta, inputs, outputs


def test_vae_golden_config_inferred_from_shapes(golden):
    vae, meta, _, _ = golden
    config = meta["config"]
    assert vae.config.dim == config["dim"]
    assert vae.config.z_dim == config["z_dim"]
    assert list(vae.config.dim_mult) == list(config["dim_mult"])
    assert vae.config.num_res_blocks == config["num_res_blocks"]
    assert list(vae.config.attn_scales) == list(config["attn_scales"])
    assert list(vae.config.temperal_downsample) == list(config["temperal_downsample"])
    assert infer_vae_config(vae.state_dict()) == vae.config


def test_vae_golden_encode(golden):
    vae, _, inputs, outputs = golden
    latent = vae.encode(inputs["video"].float())
    err = assert_close_golden(latent, outputs["latent"], REL_TOL, "vae latent")
    print(f"vae golden latent max error {err:.3e}")


def test_vae_golden_decode(golden):
    vae, _, _, outputs = golden
    recon = vae.decode(outputs["latent"].float())
    err = assert_close_golden(recon, outputs["recon"], REL_TOL, "vae recon")
    print(f"vae golden recon max error {err:.3e}")
