"""Video files of the Python API: frames, rate and sound survive a write and a read; nothing is overwritten."""
import numpy as np
import pytest

from wan_animate.io.video import Sound, read_video, write_video


def frames(count: int = 6) -> np.ndarray:
    video = np.zeros((count, 32, 48, 3), np.uint8)
    for i in range(count):
        video[i, :, i * 8:(i + 1) * 8] = 200  # a bar moving right
    return video


def test_frames_rate_and_sound_come_back(tmp_path):
    tone = np.stack([np.sin(np.arange(8000) / 5), np.cos(np.arange(8000) / 5)]).astype(np.float32) * 0.5  # 0.5 s
    path = write_video(tmp_path / "clip.mp4", frames(), 12.0, Sound(tone, 16000))
    video = read_video(path)
    assert video.frames.shape == (6, 32, 48, 3) and video.fps == 12.0
    assert np.abs(video.frames.astype(int) - frames()).mean() < 8  # H.264, lossy
    assert video.sound is not None and video.sound.sample_rate == 16000 and video.sound.samples.shape[0] == 2
    assert abs(video.sound.samples.shape[1] - 8000) < 2048  # AAC adds priming/padding of about one frame


def test_an_existing_file_is_never_replaced(tmp_path):
    target = tmp_path / "result.mp4"
    target.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="exists already"):
        write_video(target, frames(), 12.0)
    assert target.read_bytes() == b"the user's file"


def test_odd_sizes_are_refused_before_any_file(tmp_path):
    with pytest.raises(ValueError, match="even width and height; got 47x31"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 47, 3), np.uint8), 12.0)
    assert not (tmp_path / "odd.mp4").exists()


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import av

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", fail)
    with pytest.raises(OSError, match="disk full"):
        write_video(tmp_path / "half.mp4", frames(), 12.0)
    assert not (tmp_path / "half.mp4").exists()


def test_not_a_video_is_named(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        read_video(tmp_path / "notes.mp4")
