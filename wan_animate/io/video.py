"""Read a video's frames, rate and sound; write frames (and sound) as an H.264 mp4, never over an existing file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass
class Sound:
    """Audio samples [C, S] float32 at `sample_rate` Hz, starting with the video's first frame."""

    samples: np.ndarray
    sample_rate: int


@dataclass
class Video:
    """Frames [F, H, W, 3] uint8 RGB at `fps`, with the sound of the file when it has one."""

    frames: np.ndarray
    fps: float
    sound: Sound | None = None


def _av():
    try:
        import av
    except ImportError as error:
        raise ImportError("reading and writing videos needs PyAV: pip install av") from error
    return av


def read_video(path: str | os.PathLike) -> Video:
    """Every frame of the file's first video stream, its average rate and its first audio stream (if any)."""
    av = _av()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"driving video '{path}' does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"'{path}' has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as error:
        raise ValueError(f"'{path}' is not a readable video: {error}") from error
    if not frames:
        raise ValueError(f"'{path}' has no frames")
    return Video(np.stack(frames), fps, _read_sound(av, path))


def _read_sound(av, path) -> Sound | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]  # each [C, n] (planar) or [1, n*C]
        if not chunks:
            return None
        layout_channels = stream.codec_context.channels
        samples = np.concatenate([_planar(c, layout_channels) for c in chunks], axis=1)  # [C, S]
        return Sound(samples.astype(np.float32), stream.codec_context.sample_rate)


def _planar(chunk: np.ndarray, channels: int) -> np.ndarray:
    """A decoded audio chunk as [C, n]: packed formats come as [1, n * C] with channels interleaved."""
    if chunk.shape[0] == channels:
        return chunk
    return chunk.reshape(-1, channels).T


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, sound: Sound | None = None) -> str:
    """Frames [F, H, W, 3] uint8 RGB (even sides) as H.264 at `fps`, with `sound` as AAC, into a new file `path`
    (an existing file is never replaced: FileExistsError)."""
    av = _av()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames: expected uint8 [F, H, W, 3] with F >= 1; got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames: H.264 needs an even width and height; got {frames.shape[2]}x{frames.shape[1]}")
    try:
        handle = open(path, "xb")
    except FileExistsError:
        raise FileExistsError(f"'{path}' exists already; choose another output file") from None
    try:
        with handle, av.open(handle, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            audio = None
            if sound is not None:
                audio = container.add_stream("aac", rate=sound.sample_rate)
                audio.layout = "stereo" if sound.samples.shape[0] >= 2 else "mono"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
            if audio is not None:
                channels = 2 if audio.layout.name == "stereo" else 1
                planar = np.ascontiguousarray(sound.samples[:channels], dtype=np.float32)
                chunk = av.AudioFrame.from_ndarray(planar, format="fltp", layout=audio.layout.name)
                chunk.sample_rate = sound.sample_rate
                container.mux(audio.encode(chunk))
                container.mux(audio.encode())
    except BaseException:
        os.remove(path)  # the file this call created: no half-written video is left behind
        raise
    return str(path)
