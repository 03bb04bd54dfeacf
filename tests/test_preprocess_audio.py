"""The driving video's sound cut to the generated frames (wan_animate.preprocess.audio)."""
import pytest
import torch

from wan_animate.preprocess.audio import audio_samples_for_frames, trim_waveform


def test_samples_last_as_long_as_the_frames():
    assert audio_samples_for_frames(60, 30, 48000) == 96000  # 2 s
    assert audio_samples_for_frames(24, 30, 44100) == 35280  # 0.8 s
    assert audio_samples_for_frames(1, 30000 / 1001, 48000) == 1602  # 1601.6 rounded up, as ComfyUI's writer


def test_waveform_is_cut_at_the_last_frame_and_keeps_its_channels():
    waveform = torch.arange(2 * 48000, dtype=torch.float32).reshape(1, 2, 48000)  # [B, C, S], 1 s at 48 kHz
    cut = trim_waveform(waveform, 48000, 15, 30)
    assert cut.shape == (1, 2, 24000) and torch.equal(cut, waveform[..., :24000])
    assert trim_waveform(waveform, 48000, 60, 30).shape == (1, 2, 48000)  # shorter sound: kept whole


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="fps > 0"):
        audio_samples_for_frames(10, 0, 48000)
