"""Pure pipeline functions: segment plan, padding order, mask layout, resolution policy, colour drift, resume keys."""
from __future__ import annotations

import pytest
import torch

from wan_animate.pipeline.color import colour_drift, match_colour, mean_colour
from wan_animate.pipeline.conditioning import fold_pixel_mask, keep_mask_at_latent_size, segment_mask
from wan_animate.preprocess.resolution import MAX_SIDE, generation_size, size_for_aspect
from wan_animate.pipeline.resume import SegmentStore, job_key
from wan_animate.pipeline.segments import latent_frames, padded_length, padding_sources, plan_segments


def official_valid_len(real_len: int, clip_len: int, overlap: int) -> int:
    """The official rule (get_valid_len), restated for real_len >= clip_len."""
    stride = clip_len - overlap
    last = (real_len - overlap) % stride
    return real_len + (0 if last == 0 else stride - last)


def bounce(real_len: int, target_len: int) -> list[int]:
    """Walk 0..F-1 and back, turning at both ends, one step per frame."""
    out, idx, step = [], 0, 1
    while len(out) < target_len:
        out.append(idx)
        if not 0 <= idx + step < real_len:
            step = -step
        idx += step
    return out


@pytest.mark.parametrize("clip_len,refert", [(9, 1), (9, 5), (13, 5), (77, 1), (77, 5), (81, 1)])
def test_padded_length_tiles_and_matches_official(clip_len, refert):
    for real_len in range(1, 3 * clip_len):
        target = padded_length(real_len, clip_len, refert)
        assert target >= max(real_len, clip_len)
        assert (target - clip_len) % (clip_len - refert) == 0
        if real_len >= clip_len:
            assert target == official_valid_len(real_len, clip_len, refert)


def test_padding_order_bounces_without_repeating_ends():
    assert padding_sources(4, 12) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert padding_sources(2, 5) == [0, 1, 0, 1, 0]
    assert padding_sources(1, 3) == [0, 0, 0]
    for real_len in range(2, 9):
        assert padding_sources(real_len, 40) == bounce(real_len, 40)


def test_plan_segments_overlap_and_guides():
    plan = plan_segments(13, 9, 1)  # padded to 17: two segments of 9 overlapping by 1
    assert [s.start for s in plan] == [0, 8]
    assert [s.guide_frames for s in plan] == [0, 1]
    assert plan[0].sources == tuple(range(9))
    assert plan[1].sources == (8, 9, 10, 11, 12, 11, 10, 9, 8)
    assert sum(s.kept_frames for s in plan) == 17

    plan = plan_segments(30, 13, 5)
    stride = 8
    for previous, current in zip(plan, plan[1:]):
        assert current.start - previous.start == stride
        assert current.sources[:5] == previous.sources[-5:]
    assert sum(s.kept_frames for s in plan) >= 30


def test_plan_short_video_gets_one_full_segment():
    plan = plan_segments(3, 9, 5)
    assert len(plan) == 1 and plan[0].sources == (0, 1, 2, 1, 0, 1, 2, 1, 0)


@pytest.mark.parametrize("clip_len,refert", [(8, 1), (9, 2), (5, 5), (1, 1)])
def test_bad_segment_settings_are_named(clip_len, refert):
    with pytest.raises(ValueError, match="clip_len|refert_num"):
        plan_segments(20, clip_len, refert)


def test_latent_frames():
    assert latent_frames(77) == 20 and latent_frames(9) == 3 and latent_frames(81) == 21


def test_fold_pixel_mask_layout():
    frames = 9
    mask = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1).expand(frames, 2, 3)
    folded = fold_pixel_mask(mask)  # [4, 3, 2, 3]
    assert folded.shape == (4, 3, 2, 3)
    assert folded[:, 0, 0, 0].tolist() == [0, 0, 0, 0]  # first frame repeated 4 times
    assert folded[:, 1, 0, 0].tolist() == [1, 2, 3, 4]
    assert folded[:, 2, 0, 0].tolist() == [5, 6, 7, 8]


def test_segment_mask_guides():
    assert segment_mask(9, 2, 2, 0).abs().sum() == 0
    one = segment_mask(9, 2, 2, 1)
    assert torch.all(one[:, 0] == 1) and torch.all(one[:, 1:] == 0)
    five = segment_mask(9, 2, 2, 5)
    assert torch.all(five[:, :2] == 1) and torch.all(five[:, 2] == 0)
    keep = torch.zeros(9, 2, 2)
    keep[:, 0, 1] = 1
    replaced = segment_mask(9, 2, 2, 1, keep)
    assert torch.all(replaced[:, 0] == 1)
    assert torch.all(replaced[:, 1:, 0, 1] == 1) and torch.all(replaced[:, 1:, 1, :] == 0)


def test_keep_mask_is_inverted_and_nearest():
    person = torch.zeros(5, 16, 32)
    person[:, :8, :] = 1
    keep = keep_mask_at_latent_size(person, 2, 4)
    assert keep.shape == (5, 2, 4)
    assert torch.all(keep[:, 0] == 0) and torch.all(keep[:, 1] == 1)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}


def test_size_for_aspect():
    assert size_for_aspect(1920, 1080) == (1280, 720)
    assert size_for_aspect(1080, 1920) == (720, 1280)
    for w, h, area in [(1000, 1000, 1280 * 720), (640, 480, 832 * 480), (1234, 567, 1280 * 720)]:
        sw, sh = size_for_aspect(w, h, area)
        assert sw % 16 == 0 and sh % 16 == 0
        assert abs(sw * sh - area) / area < 0.1
        assert abs(sw / sh - w / h) / (w / h) < 0.05


@pytest.mark.parametrize("width, height", [(4000, 100), (100, 4000), (100000, 1), (1, 100000), (4096, 4096)])
@pytest.mark.parametrize("area", [64 * 64, 1280 * 720, 4096 * 4096])
def test_extreme_aspect_ratios_stay_within_the_largest_side(width, height, area):
    w, h = size_for_aspect(width, height, area)
    assert w <= MAX_SIDE and h <= MAX_SIDE and w % 16 == 0 and h % 16 == 0 and w >= 16 and h >= 16
    if max(width, height) / min(width, height) <= 256:  # representable with 16-px multiples within 4096
        assert abs(w / h - width / height) <= 16 / min(w, h) * (width / height)
    assert size_for_aspect(4000, 100) == (3840, 96) and size_for_aspect(100, 4000) == (96, 3840)


def test_generation_size_follows_mode():
    assert generation_size("animate", (720, 1280), (1920, 1080)) == (720, 1280)
    assert generation_size("replace", (720, 1280), (1920, 1080)) == (1280, 720)
    with pytest.raises(ValueError, match="mode"):
        generation_size("swap", (1, 1), (1, 1))


def test_match_colour_removes_drift():
    torch.manual_seed(0)
    tail = torch.rand(3, 2, 8, 8) * 0.5 - 0.25
    drifted = (tail * 0.8 + torch.tensor([0.2, -0.1, 0.05]).view(3, 1, 1, 1)).clamp(-1, 1)
    segment = torch.cat([drifted, drifted.flip(1)], dim=1)
    before = colour_drift(tail, segment[:, :2])
    corrected = match_colour(segment, segment[:, :2], tail)
    after = colour_drift(tail, corrected[:, :2])
    assert before > 0.1 and after < 1e-5
    assert torch.allclose(mean_colour(corrected[:, :2]), mean_colour(tail), atol=1e-5)


def test_job_key_and_store(tmp_path):
    a = torch.arange(6.0)
    key = job_key({"steps": 4}, [("a", a)])
    assert key == job_key({"steps": 4}, [("a", a.clone())])
    assert key != job_key({"steps": 5}, [("a", a)])
    assert key != job_key({"steps": 4}, [("a", a + 1)])
    assert key != job_key({"steps": 4}, [("a", None)])
    store = SegmentStore(str(tmp_path), key)
    assert store.finished_count() == 0
    store.save(0, torch.ones(3, 2, 4, 4), torch.zeros(3, 1, 4, 4))
    assert store.finished_count() == 1
    kept, tail = store.load(0)
    assert torch.equal(kept, torch.ones(3, 2, 4, 4)) and torch.equal(tail, torch.zeros(3, 1, 4, 4))
