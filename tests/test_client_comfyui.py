"""wan_animate.client against a real ComfyUI, with tiny workflows of core nodes only (independent of the pack's
nodes). Skipped unless COMFYUI_PATH names a ComfyUI checkout."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from wan_animate import client

pytestmark = pytest.mark.comfyui

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "client_invert"}},
}
VIDEO_FRAMES = {
    "1": {"class_type": "LoadVideo", "inputs": {"file": "placeholder.mp4"}},
    "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "client_frames"}},
}


def _write(tmp_path: Path, name: str, workflow: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(workflow))
    return path


def _gradient_image(path: Path) -> np.ndarray:
    pixels = np.zeros((24, 32, 3), np.uint8)
    pixels[..., 0] = np.arange(32, dtype=np.uint8)[None, :] * 8
    pixels[..., 1] = np.arange(24, dtype=np.uint8)[:, None] * 10
    pixels[..., 2] = 77
    Image.fromarray(pixels).save(path)
    return pixels


def _tiny_video(path: Path, frames: int = 5, size: tuple[int, int] = (32, 24)) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            pixels = np.full((size[1], size[0], 3), 40 * index, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_client_runs_an_image_workflow(comfyui, tmp_path, capsys):
    pixels = _gradient_image(tmp_path / "char.png")
    out = tmp_path / "out"
    code = client.main(["--server", comfyui.url, "--workflow", str(_write(tmp_path, "invert.json", INVERT)),
                        "--image", str(tmp_path / "char.png"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (saved,) = [Path(line) for line in captured.out.split()]
    assert saved.parent == out and saved.name.startswith("client_invert")
    inverted = np.asarray(Image.open(saved).convert("RGB")).astype(int)
    assert np.abs(inverted - (255 - pixels.astype(int))).max() <= 1  # ComfyUI truncates when saving
    assert (comfyui.input_dir / "char.png").is_file()
    assert "running node" in captured.err  # progress came over the websocket


def test_client_never_overwrites_a_file_in_comfyuis_input_folder(comfyui, tmp_path, capsys):
    pixels = _gradient_image(tmp_path / "keep_me.png")
    (comfyui.input_dir / "keep_me.png").write_bytes(b"a file someone else uploaded")
    code = client.main(["--server", comfyui.url, "--workflow", str(_write(tmp_path, "invert.json", INVERT)),
                        "--image", str(tmp_path / "keep_me.png"), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (comfyui.input_dir / "keep_me.png").read_bytes() == b"a file someone else uploaded"
    assert (comfyui.input_dir / "keep_me (1).png").read_bytes() == (tmp_path / "keep_me.png").read_bytes()
    (saved,) = [Path(line) for line in captured.out.splitlines()]
    assert np.abs(np.asarray(Image.open(saved).convert("RGB")).astype(int) - (255 - pixels.astype(int))).max() <= 1


def test_client_uploads_a_video_through_upload_image(comfyui, tmp_path, capsys):
    _tiny_video(tmp_path / "drive.mp4", frames=5)
    out = tmp_path / "out"
    code = client.main(["--server", comfyui.url, "--workflow", str(_write(tmp_path, "frames.json", VIDEO_FRAMES)),
                        "--video", str(tmp_path / "drive.mp4"), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = [Path(line) for line in captured.out.split()]
    assert len(saved) == 5
    assert Image.open(saved[0]).size == (32, 24)
    assert (comfyui.input_dir / "drive.mp4").read_bytes() == (tmp_path / "drive.mp4").read_bytes()


def test_client_shows_comfyui_validation_errors(comfyui, tmp_path, capsys):
    broken = {**INVERT, "2": {"class_type": "ImageInvert", "inputs": {}}}
    code = client.main(["--server", comfyui.url, "--workflow", str(_write(tmp_path, "broken.json", broken)),
                        "--image", str(_gradient_image_path(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in err
    assert "node 2 [ImageInvert]: Required input is missing (image)" in err


def test_client_shows_the_failing_node(comfyui, tmp_path, capsys):
    (tmp_path / "not_an_image.png").write_bytes(b"this is not a PNG")
    code = client.main(["--server", comfyui.url, "--workflow", str(_write(tmp_path, "invert.json", INVERT)),
                        "--image", str(tmp_path / "not_an_image.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "ComfyUI failed while running node 1 [LoadImage]:" in err
    assert "UnidentifiedImageError" in err


def _gradient_image_path(tmp_path: Path) -> Path:
    _gradient_image(tmp_path / "char.png")
    return tmp_path / "char.png"
