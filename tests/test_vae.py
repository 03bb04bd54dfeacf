"""Wan2.1 VAE on tiny random weights: shapes, exact causal chunking, state-dict layout, input errors."""
from __future__ import annotations

import pytest
import torch

from helpers_vae import TINY, TINY_ATTN, random_vae, random_video, reference_decode, reference_encode
from wan_animate.model.vae import WanVAE
from wan_animate.model.vae_config import WAN21_LATENT_MEAN, VAEConfig, infer_vae_config


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    return random_vae(TINY)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_shapes_and_ranges(vae):
    video = random_video(9, 32, 48, batch=2)
    latent = vae.encode(video)
    assert latent.shape == (2, 16, 3, 4, 6) and latent.dtype == torch.float32
    recon = vae.decode(latent)
    assert recon.shape == (2, 3, 9, 32, 48) and recon.dtype == torch.float32
    assert recon.abs().max() <= 1.0
    # batch items are coded independently
    assert _max_err(vae.encode(video[1:]), latent[1:]) < 1e-5


def test_single_frame_round_trip_shapes(vae):
    latent = vae.encode(random_video(1, 16, 24))
    assert latent.shape == (1, 16, 1, 2, 3)
    assert vae.decode(latent).shape == (1, 3, 1, 16, 24)


@pytest.mark.parametrize("config", [TINY, TINY_ATTN], ids=["tiny", "tiny_attn"])
def test_chunked_coding_equals_whole_sequence_reference(config):
    """Chunks of 1, 4, 4 frames through the temporal cache == one causal pass over the whole video."""
    model = random_vae(config, seed=3)
    video = random_video(9, 32, 32, seed=4)
    latent = model.encode(video)
    assert _max_err(latent, reference_encode(model, video)) < 1e-5
    assert _max_err(model.decode(latent), reference_decode(model, latent)) < 1e-5


def test_encode_is_causal(vae):
    """The first 1+4k frames alone give the same first 1+k latents as the longer video."""
    video = random_video(13, 16, 24, seed=5)
    full = vae.encode(video)
    assert _max_err(vae.encode(video[:, :, :5]), full[:, :, :2]) < 1e-6
    changed = video.clone()
    changed[:, :, 9:] = -changed[:, :, 9:]
    assert _max_err(vae.encode(changed)[:, :, :3], full[:, :, :3]) < 1e-6
    assert _max_err(vae.encode(changed)[:, :, 3], full[:, :, 3]) > 1e-3


def test_decode_is_causal(vae):
    latent = torch.randn(1, 16, 4, 2, 3, generator=torch.Generator().manual_seed(6))
    full = vae.decode(latent)
    assert full.shape[2] == 13
    assert _max_err(vae.decode(latent[:, :, :2]), full[:, :, :5]) < 1e-6


def test_state_dict_uses_official_layout(vae):
    keys = set(vae.state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "conv1", "conv2"}
    for key in (
        "encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma", "encoder.downsamples.0.residual.2.weight",
        "encoder.downsamples.0.residual.6.bias", "encoder.downsamples.1.resample.1.weight",
        "encoder.downsamples.2.shortcut.weight", "encoder.downsamples.3.time_conv.weight",
        "encoder.middle.1.to_qkv.weight", "encoder.middle.1.norm.gamma", "encoder.head.0.gamma",
        "encoder.head.2.weight", "decoder.upsamples.2.time_conv.weight", "decoder.upsamples.2.resample.1.weight",
        "decoder.head.2.bias", "conv1.weight", "conv2.bias",
    ):
        assert key in keys, key
    # spatial-only resamples have no time_conv: encoder stage 0 and decoder stage 2 of (False, True, True)
    assert "encoder.downsamples.1.time_conv.weight" not in keys
    assert "decoder.upsamples.8.resample.1.weight" in keys and "decoder.upsamples.8.time_conv.weight" not in keys
    assert vae.state_dict()["encoder.middle.1.norm.gamma"].shape == (16, 1, 1)
    assert vae.state_dict()["encoder.head.0.gamma"].shape == (16, 1, 1, 1)


@pytest.mark.parametrize("config", [TINY, TINY_ATTN, VAEConfig()], ids=["tiny", "tiny_attn", "released"])
def test_config_inferred_from_shapes(config):
    with torch.device("meta"):
        model = WanVAE(config, latent_mean=[0.0] * config.z_dim, latent_std=[1.0] * config.z_dim)
    assert infer_vae_config(model.state_dict()) == config


def test_released_config_and_stats_are_the_default():
    config = VAEConfig()
    assert (config.dim, config.z_dim, config.dim_mult, config.num_res_blocks) == (96, 16, (1, 2, 4, 4), 2)
    assert config.temperal_downsample == (False, True, True) and config.attn_scales == ()
    with torch.device("meta"):
        model = WanVAE()
    assert model.latent_mean == WAN21_LATENT_MEAN and len(model.latent_std) == 16
    latent = model.normalize_latent(torch.zeros(1, 16, 1, 1, 1))
    assert torch.allclose(model.denormalize_latent(latent), torch.zeros(1, 16, 1, 1, 1), atol=1e-6)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.zeros(3, 5, 16, 16), r"video must have 5 dims \[B, 3, F, H, W\]; found 4 dims"),
        (torch.zeros(1, 4, 5, 16, 16), r"video must have 3 channels .*found 4"),
        (torch.zeros(1, 3, 8, 16, 16), r"video has 8 frames; the VAE needs 4k\+1 frames"),
        (torch.zeros(1, 3, 5, 20, 16), r"video size 20x16 \(HxW\): both must be positive multiples of 8"),
        (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), r"video must be a float tensor .*found dtype torch.uint8"),
    ],
    ids=["rank", "channels", "frames", "size", "dtype"],
)
def test_encode_rejects_bad_video(vae, video, message):
    with pytest.raises(ValueError, match=message):
        vae.encode(video)


@pytest.mark.parametrize(
    ("latent", "message"),
    [
        (torch.zeros(16, 2, 2, 2), r"latent must have 5 dims \[B, 16, T, h, w\]; found 4 dims"),
        (torch.zeros(1, 8, 2, 2, 2), r"latent must have 16 channels .*found 8"),
        (torch.zeros(1, 16, 0, 2, 2), r"latent has an empty dimension"),
    ],
    ids=["rank", "channels", "empty"],
)
def test_decode_rejects_bad_latent(vae, latent, message):
    with pytest.raises(ValueError, match=message):
        vae.decode(latent)


def test_bad_latent_stats_rejected():
    with pytest.raises(ValueError, match="latent_mean has 3 values; expected z_dim = 16"):
        WanVAE(TINY, latent_mean=[0.0] * 3)


def test_causal_conv_through_onednn_equals_padded_reference():
    """A spatial 3x3x3 conv over >= 16 channels that PyTorch's CPU rule would send to its native kernel
    (N*C*T*H = 1*96*3*48 <= 20480) runs through oneDNN and still equals conv3d over the explicitly padded input."""
    from wan_animate.model.vae_layers import CausalConv3d, TemporalCache

    torch.manual_seed(0)
    conv = CausalConv3d(96, 32, 3, padding=1).eval()
    x = torch.randn(1, 96, 1, 48, 20)
    assert conv._prefers_onednn(x)
    with torch.no_grad():
        ours = conv(x, TemporalCache())
        reference = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (1, 1, 1, 1, 2, 0)), conv.weight, conv.bias)
    assert ours.shape == reference.shape == (1, 32, 1, 48, 20)
    assert _max_err(ours, reference) < 1e-5
    assert not CausalConv3d(3, 8, 3, padding=1)._prefers_onednn(torch.randn(1, 3, 1, 8, 8))
    assert not CausalConv3d(32, 64, (3, 1, 1), padding=(1, 0, 0))._prefers_onednn(torch.randn(1, 32, 1, 8, 8))
