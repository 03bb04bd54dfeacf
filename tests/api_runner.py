"""Run an API-format workflow through the pack's node classes on CPU, without ComfyUI.

ComfyUI core nodes that the workflows use are stood in for by small functions with the same inputs and outputs
(image and video loading, video assembly and saving), so the pack's own nodes run exactly as ComfyUI would call them.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image


class CoreStandIns:
    """The core nodes' behaviour on the files of `input_dir`; saved videos land in `output_dir`."""

    def __init__(self, input_dir: Path, output_dir: Path):
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.saved: list[Path] = []
        self.saved_videos: list[dict] = []  # CreateVideo's record of each saved video: images, fps, audio

    def LoadImage(self, image, upload=None):
        picture = np.array(Image.open(self.input_dir / image).convert("RGB"))
        mask = torch.zeros(1, *picture.shape[:2])
        return torch.from_numpy(picture).float()[None] / 255.0, mask

    def LoadVideo(self, file):
        return self.input_dir / file

    def GetVideoComponents(self, video):
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate)
        return torch.from_numpy(np.stack(frames)).float() / 255.0, None, fps

    def CreateVideo(self, images, fps, audio=None):
        return {"images": images, "fps": Fraction(fps), "audio": audio}

    def SaveVideo(self, video, filename_prefix, format="auto", codec="auto"):
        path = self.output_dir / f"{Path(filename_prefix).name}.npy"
        np.save(path, video["images"].numpy())
        self.saved.append(path)
        self.saved_videos.append(video)
        return ()

    def PreviewImage(self, images):
        return ()


def run_api_workflow(workflow: dict, node_classes: dict, core: CoreStandIns) -> dict[str, tuple]:
    """Execute every node of `workflow` (API format) in dependency order; returns each node's outputs."""
    results: dict[str, tuple] = {}

    def evaluate(node_id: str) -> tuple:
        if node_id in results:
            return results[node_id]
        node = workflow[node_id]
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                kwargs[name] = evaluate(value[0])[value[1]]
            else:
                kwargs[name] = value
        class_type = node["class_type"]
        if class_type in node_classes:
            cls = node_classes[class_type]
            output = getattr(cls(), cls.FUNCTION)(**kwargs)
            output = output["result"] if isinstance(output, dict) else output
        else:
            output = getattr(core, class_type)(**kwargs)
            output = output if isinstance(output, tuple) else (output,)
        results[node_id] = output
        return output

    for node_id in workflow:
        evaluate(node_id)
    return results
