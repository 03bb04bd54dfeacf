"""The README's "From Python without ComfyUI" block runs as written, on tiny models, and writes the mp4."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REPO_ROOT
from safetensors.torch import load_file
from tiny_models import CHARACTER_SIZE, FILES, VIDEO_FPS, VIDEO_FRAMES, VIDEO_SIZE, figure_frame, write_tiny_models

from wan_animate.io.embeddings import Embeddings, save_embeddings

SAMPLE_RATE = 16000


def readme_block() -> str:
    """The python code block of the README that calls animate_files."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.DOTALL)
    matching = [b for b in blocks if "animate_files(" in b]
    assert len(matching) == 1, f"expected one README python block calling animate_files; found {len(matching)}"
    return matching[0]


def write_driving_video_with_sound(path: Path) -> np.ndarray:
    """The tiny driving video plus a 440 Hz stereo tone lasting as long; returns the tone [2, S]."""
    frames = np.stack([figure_frame(VIDEO_SIZE, (i % 5) * 3) for i in range(VIDEO_FRAMES)])
    seconds = VIDEO_FRAMES / VIDEO_FPS
    tone = np.sin(2 * np.pi * 440 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE).astype(np.float32)
    tone = np.stack([tone, -tone]) * 0.5
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.height, video.width = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
        chunk.sample_rate = SAMPLE_RATE
        container.mux(audio.encode(chunk))
        container.mux(audio.encode())
    return tone


def place_readme_files(folder: Path, block: str) -> None:
    """The tiny models under the file names the README block uses."""
    tiny = folder / "tiny"
    write_tiny_models(tiny)
    names = dict(re.findall(r'(\w+)="([^"]+)"', block))
    sources = {"dit": tiny / "models" / "diffusion_models" / FILES["dit"], "vae": tiny / "models" / "vae" / FILES["vae"],
               "detector": tiny / "models" / "detection" / FILES["detector"],
               "pose_model": tiny / "models" / "detection" / FILES["pose"],
               "character": tiny / "input" / FILES["character"]}
    for argument, source in sources.items():
        target = folder / names[argument]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    write_driving_video_with_sound(folder / names["driving_video"])
    tensors = load_file(str(tiny / "input" / FILES["embeds"]))
    saved = save_embeddings(folder, "embeds", Embeddings(tensors["context"], tensors["clip_fea"], tensors["context_null"]))
    assert saved.name == names["embeddings"]


def test_readme_python_block_writes_the_video_with_sound(tmp_path, monkeypatch):
    block = readme_block()
    place_readme_files(tmp_path, block)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})

    out = tmp_path / dict(re.findall(r'(\w+)="([^"]+)"', block))["out"]
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        assert float(video.average_rate) == 30.0
        expected = int(VIDEO_FRAMES / VIDEO_FPS * 30)  # resampled to 30 fps by timestamp
        assert len(frames) == expected
        assert np.std(frames) > 0
        seconds = float(audio.duration * audio.time_base)
        assert seconds == pytest.approx(expected / 30, abs=0.1)  # the sound ends with the last frame

    with pytest.raises(FileExistsError, match="exists already"):
        exec(compile(block, "README.md", "exec"), {})  # a second run never replaces the first result
