"""Tiny ONNX stand-ins for the official preprocessing models, with the real models' interfaces.

- detector: like `det/yolov10m.onnx`, input "images" [N, 3, 640, 640] (RGB in 0..1), output "output0" [N, 300, 6]
  rows (x1, y1, x2, y2, score, class) in input pixels. Row 0 boxes the pixels whose red value is over 0.5
  (a person, score 0.9), row 1 those whose green is over 0.5 (a person, score 0.8), row 2 those whose blue is over
  0.5 (class 2, not a person, score 0.7); a row scores 0 when its colour is absent. Other rows are empty.
- pose model: like `pose2d/vitpose_h_wholebody.onnx`, input "input" [N, 3, 256, 192] (normalised), output "output"
  [N, 133, 64, 48] heatmaps. Maps 0..131 are fixed Gaussians (sigma `PEAK_SIGMA` cells) at `FIXED_PEAKS`
  (sub-cell positions, amplitudes); map 132 is the input's green channel sampled every 4 pixels, minus its minimum,
  so it peaks where the crop is greenest.
Both are exported with a fixed batch (any size) or a dynamic one.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

DETECTOR_ROWS = 300
HEATMAP_STRIDE = 4
PEAK_SIGMA = 2.0
NUM_KEYPOINTS = 133


def _fixed_peaks() -> np.ndarray:
    """[132, 3] (x, y, amplitude) in heatmap cells, away from the borders, at sub-cell positions."""
    k = np.arange(NUM_KEYPOINTS - 1)
    x = 10.0 + (k * 7) % 28 + 0.1 * (k % 7) - 0.3
    y = 10.0 + (k * 5) % 44 + 0.13 * (k % 5) - 0.25
    amplitude = 0.5 + 0.1 * (k % 5)
    return np.stack([x, y, amplitude], axis=1)


FIXED_PEAKS = _fixed_peaks()


def fixed_heatmaps(height: int = 64, width: int = 48) -> np.ndarray:
    """The constant maps 0..131 of the pose fixture: [132, H, W] float32."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py, amp = (FIXED_PEAKS[:, i, None, None] for i in range(3))
    return (amp * np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * PEAK_SIGMA ** 2))).astype(np.float32)


class _BrightBoxDetector(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, 300, 6]
        n, _, h, w = images.shape
        xs = torch.arange(w, dtype=torch.float32)
        ys = torch.arange(h, dtype=torch.float32)
        rows = []
        for channel, score, label in ((0, 0.9, 0.0), (1, 0.8, 0.0), (2, 0.7, 2.0)):
            bright = (images[:, channel] > 0.5).float()  # [N, H, W]
            cols_on = bright.amax(dim=1)  # [N, W]
            rows_on = bright.amax(dim=2)  # [N, H]
            present = cols_on.amax(dim=1)  # [N]
            x1 = (xs + (1 - cols_on) * 1e5).amin(dim=1)
            y1 = (ys + (1 - rows_on) * 1e5).amin(dim=1)
            x2 = ((xs + 1) * cols_on).amax(dim=1)
            y2 = ((ys + 1) * rows_on).amax(dim=1)
            box = torch.stack([x1, y1, x2, y2], dim=1) * present[:, None]
            rows.append(torch.cat([box, (score * present)[:, None], (label * present)[:, None]], dim=1))
        found = torch.stack(rows, dim=1)  # [N, 3, 6]
        empty = images[:, :1, :1, :1].reshape(n, 1, 1) * 0 + torch.zeros(1, DETECTOR_ROWS - 3, 6)
        return torch.cat([found, empty], dim=1)


class _FixedPeakPoseModel(torch.nn.Module):
    def __init__(self, input_hw: tuple[int, int], peak_scale: float):
        super().__init__()
        self.register_buffer("fixed", peak_scale * torch.from_numpy(
            fixed_heatmaps(input_hw[0] // HEATMAP_STRIDE, input_hw[1] // HEATMAP_STRIDE)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [N, 3, 256, 192] -> [N, 133, 64, 48]
        green = images[:, 1:2, ::HEATMAP_STRIDE, ::HEATMAP_STRIDE]
        green = green - green.amin(dim=(2, 3), keepdim=True)
        fixed = self.fixed[None] + images[:, :1, :1, :1] * 0  # broadcast to the batch
        return torch.cat([fixed, green], dim=1)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
            dynamic_batch: bool) -> Path:
    dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return path


def export_detector(path: str | Path, batch: int | None = None, input_hw: tuple[int, int] = (640, 640)) -> Path:
    """Write the detector fixture to `path`: fixed batch `batch`, or a dynamic batch when None."""
    example = torch.zeros(batch or 2, 3, *input_hw)
    return _export(_BrightBoxDetector(), example, Path(path), "images", "output0", batch is None)


def export_pose_model(path: str | Path, batch: int | None = None, input_hw: tuple[int, int] = (256, 192),
                      peak_scale: float = 1.0) -> Path:
    """Write the pose fixture to `path`: fixed batch `batch`, or a dynamic batch when None; the fixed maps are
    multiplied by `peak_scale` (e.g. 0.1 for a model that finds no confident keypoint)."""
    example = torch.zeros(batch or 2, 3, *input_hw)
    return _export(_FixedPeakPoseModel(input_hw, peak_scale), example, Path(path), "input", "output", batch is None)
