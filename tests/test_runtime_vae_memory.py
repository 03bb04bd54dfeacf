"""The VAE in the memory plan: its workspace estimate, automatic tiling when untiled coding would not fit, and the
float32 default of the VAE loader."""
import logging

import pytest
import torch

from conftest import load_pack
from helpers_vae import random_vae
from wan_animate.model.vae_coding import VAECoder
from wan_animate.runtime.memory import estimate_vae_bytes

GIB = 1 << 30


def test_untiled_720p_float32_decode_needs_about_21_gib():
    need = estimate_vae_bytes(96, 77, 720, 1280, torch.float32)
    assert 21 * GIB <= need <= 22.5 * GIB
    bf16 = estimate_vae_bytes(96, 77, 720, 1280, torch.bfloat16)
    video = 3 * 77 * 720 * 1280 * 4  # the float32 video is the same in both
    assert bf16 - video == (need - video) // 2
    tiled = estimate_vae_bytes(96, 77, 720, 1280, torch.float32, tile_pixels=512)
    assert 6 * GIB < tiled < 7 * GIB
    assert estimate_vae_bytes(96, 77, 480, 832, tile_pixels=1024) == estimate_vae_bytes(96, 77, 480, 832)


def test_coder_workspace_follows_its_options():
    vae = random_vae()  # float32, dim 8
    plain, tiled = VAECoder(vae), VAECoder(vae, tiled=True, tile=16, overlap=4)
    assert plain.workspace_bytes(21, 480, 832) == estimate_vae_bytes(8, 21, 480, 832, torch.float32)
    assert tiled.workspace_bytes(21, 480, 832) == estimate_vae_bytes(8, 21, 480, 832, torch.float32, 128)
    assert VAECoder(random_vae().to(torch.bfloat16)).workspace_bytes(21, 480, 832) < plain.workspace_bytes(21, 480, 832)


class FakeHandle:
    """`fits` is true when the workspace is at most `room` bytes."""

    def __init__(self, room: int):
        self.room = room

    def fits(self, device, tokens, workspace_bytes=0):
        return workspace_bytes <= self.room


@pytest.mark.parametrize("room, expect_tiled", [(GIB << 10, False), (2 * GIB, True), (1, False)])
def test_sampler_tiles_the_vae_only_when_untiled_does_not_fit_but_tiled_does(room, expect_tiled, caplog):
    generation = load_pack().nodes.generation
    vae = VAECoder(random_vae())
    video = (77, 720, 1280)
    with caplog.at_level(logging.INFO):
        chosen, workspace = generation._vae_that_fits(FakeHandle(room), vae, torch.device("cuda"), 1000, video)
    assert chosen.tiled is expect_tiled and chosen.vae is vae.vae
    assert workspace == chosen.workspace_bytes(*video)
    assert ("coding in tiles" in caplog.text) is expect_tiled


def test_vae_loader_defaults_to_float32():
    loaders = load_pack().nodes.loaders
    inputs = loaders.WanAnimateVAELoader.INPUT_TYPES()["required"]
    assert inputs["dtype"][1]["default"] == "fp32"
