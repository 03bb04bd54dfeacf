"""Frame-rate resampling and the official size policy (wan_animate.preprocess.video)."""
import numpy as np
import pytest

from wan_animate.preprocess.video import (driving_frames_for_fps, frame_indices_for_fps, frame_indices_for_timestamps,
                                          official_frame_count, padding_resize, resample_frames_by_fps, resize_frames,
                                          resize_to)


def official_indices(frame_num: int, video_fps: float, fps: float) -> list[int]:
    """The official process_pipepline.py + utils.get_frame_indices, restated: the source frame at each i / fps."""
    target_num = int(frame_num / video_fps * fps)
    times = np.arange(0, target_num) / fps
    return np.clip(np.round(times * video_fps).astype(int), 0, frame_num - 1).tolist()


def test_upsampling_25_to_30_fps_picks_nearest_frames_half_to_even():
    indices = frame_indices_for_fps(100, 25, 30)
    assert len(indices) == 120  # int(100 / 25 * 30)
    # times i/30 s at 25 fps: 0, .833, 1.667, 2.5 (-> 2, half to even), 3.33, 4.17, 5
    assert indices[:7] == [0, 1, 2, 2, 3, 4, 5]
    assert max(indices) == 99


def test_downsampling_60_to_30_fps_takes_every_other_frame():
    assert frame_indices_for_fps(61, 60, 30) == list(range(0, 60, 2))


def test_24_to_30_fps_repeats_frames_where_the_timestamps_say():
    indices = frame_indices_for_fps(48, 24, 30)
    assert indices == official_indices(48, 24, 30) and len(indices) == 60
    # times i/30 s at 24 fps: 0, .8, 1.6, 2.4, 3.2, 4, 4.8, 5.6, 6.4, 7.2 -> every 4th tick repeats a frame
    assert indices[:10] == [0, 1, 2, 2, 3, 4, 5, 6, 6, 7]


@pytest.mark.parametrize("frames,video_fps,fps", [(61, 60, 30), (48, 24, 30), (100, 29.97, 30), (37, 25, 16)])
def test_driving_frames_follow_the_official_timestamps(frames, video_fps, fps):
    indices, out_fps = driving_frames_for_fps(frames, video_fps, fps)
    assert indices == official_indices(frames, video_fps, fps) and out_fps == fps


def test_driving_frames_keep_the_source_rate_or_take_unknown_rates_as_given():
    assert driving_frames_for_fps(10, 60, -1) == (list(range(10)), 60.0)
    assert driving_frames_for_fps(10, 0, 24) == (list(range(10)), 24.0)  # video_fps unknown: frames as they are


@pytest.mark.parametrize("video_fps,fps,words", [
    (0, -1, "video_fps"), (float("nan"), 30, "video_fps"), (-5, 30, "video_fps"), (30, 0, "fps"),
    (30, float("nan"), "fps"), (30, -2, "fps"), (30, 1, "less than one frame"),
])
def test_driving_frames_reject_rates_they_cannot_use(video_fps, fps, words):
    with pytest.raises(ValueError, match=words):
        driving_frames_for_fps(1, video_fps, fps)


def test_minus_one_keeps_every_source_frame():
    frames = np.arange(50)[:, None]
    assert np.array_equal(resample_frames_by_fps(frames, 24, -1), frames)


def test_frame_count_falls_back_to_duration_when_container_count_is_off():
    assert official_frame_count(100, 25, 4.0) == 100
    assert official_frame_count(150, 25, 4.0) == 100  # 50% off: trust duration * fps
    assert official_frame_count(105, 25, 4.0) == 105  # within 10%


def test_variable_frame_rate_uses_nearest_timestamp():
    timestamps = [0.0, 0.1, 0.15, 0.3, 0.4]
    assert frame_indices_for_timestamps(timestamps, 10) == [0, 1, 2, 3, 4]
    assert frame_indices_for_timestamps(timestamps, 5) == [0, 2, 4]
    frames = np.arange(5)[:, None]
    assert resample_frames_by_fps(frames, 0, 5, timestamps_s=timestamps).ravel().tolist() == [0, 2, 4]


def test_bad_fps_and_empty_video_are_rejected():
    with pytest.raises(ValueError, match="source fps"):
        frame_indices_for_fps(10, 0, 30)
    with pytest.raises(ValueError, match="0 frames"):
        resample_frames_by_fps(np.zeros((0, 4, 4, 3), np.uint8), 30, 30)


def test_padding_resize_centres_wide_image_with_black_bars():
    image = np.full((100, 200, 3), 77, np.uint8)
    out = padding_resize(image, 200, 200)
    assert out.shape == (200, 200, 3) and out.dtype == np.uint8
    assert (out[50:150] == 77).all()
    assert (out[:50] == 0).all() and (out[150:] == 0).all()


def test_padding_resize_centres_tall_image_with_side_bars():
    image = np.full((300, 100, 3), 9, np.uint8)
    out = padding_resize(image, 150, 150)  # fits as 150 x 50, left pad int(100 / 2)
    assert (out[:, 50:100] == 9).all()
    assert (out[:, :50] == 0).all() and (out[:, 100:] == 0).all()


def test_resize_frames_gives_sixteen_multiple_sizes():
    frames = np.random.default_rng(0).integers(0, 255, (2, 90, 160, 3), dtype=np.uint8)
    out = resize_frames(frames, 48, 80)
    assert out.shape == (2, 48, 80, 3)
    assert resize_to(frames[0], 48, 80).shape == (48, 80, 3)
    # 160 x 90 content fitted into 80 x 48: the content is 80 wide and 45 high, centred, 1 black row on top
    assert (out[:, 0] == 0).all() and out[:, 1:46].any()
