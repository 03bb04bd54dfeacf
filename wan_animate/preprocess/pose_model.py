"""133-point whole-body pose with the official ViTPose-H ONNX model (`pose2d/vitpose_h_wholebody.onnx`).

Top-down, as in the official pipeline: the person box is padded by 1.25 to the model's 3:4 input (256x192), the
window is cut out of the frame (zeros outside), resized bilinearly and normalised with the ImageNet mean/std. The
[N, 133, 64, 48] heatmaps are decoded with DARK (distribution-aware) sub-pixel refinement: argmax, Gaussian
modulation (kernel 11), log, one Newton step on the log-heatmap, then mapped back to frame pixels. The score of a
keypoint is its heatmap maximum.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .onnx_session import OnnxModel

DEFAULT_INPUT_HW = (256, 192)
WHOLE_BODY_POINTS = 133  # COCO-WholeBody keypoints, one heatmap each
BOX_PADDING = 1.25
MIN_BOX_SIDE = 10  # smaller boxes are ignored: the whole frame is used instead
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
DARK_KERNEL = 11


def crop_window(box: np.ndarray | None, frame_hw: tuple[int, int], input_hw: tuple[int, int],
                padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and size (w, h) in pixels of the crop window for `box` (x1, y1, x2, y2) or, when the box is
    missing or under 10 px on a side, for the whole frame. The size has the input's aspect ratio."""
    if box is None or not np.all(np.isfinite(box[:4])) or box[2] - box[0] < MIN_BOX_SIDE \
            or box[3] - box[1] < MIN_BOX_SIDE:
        box = np.array([0.0, 0.0, frame_hw[1], frame_hw[0]])
    aspect = input_hw[0] / input_hw[1]  # height / width
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    side = max((box[2] - box[0]) * aspect, box[3] - box[1])
    size = np.array([side / aspect, side]) / 200.0 * padding * 200.0  # the official operation order, bit for bit
    return centre, size


def _window_corners(centre: np.ndarray, height: float, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer top-left and bottom-right (exclusive) pixel corners of the window, rounded as the official code does
    (through the inverse of its pixel->crop matrix, round half to even)."""
    rows, cols = input_hw
    width = height / (rows / cols)
    to_crop = np.array([[cols / width, 0.0, cols * (-centre[0] / width + 0.5)],
                        [0.0, rows / height, rows * (-centre[1] / height + 0.5)],
                        [0.0, 0.0, 1.0]])
    to_frame = np.linalg.inv(to_crop)
    top_left = to_frame @ np.array([0.0, 0.0, 1.0])
    bottom_right = to_frame @ np.array([float(cols), float(rows), 1.0])
    return np.round(top_left[:2]).astype(int), np.round(bottom_right[:2]).astype(int)


def crop_person(frame: np.ndarray, centre: np.ndarray, size: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """The window (zeros outside the frame) resized bilinearly to the input size: [h, w, C] float32 in 0..255."""
    top_left, bottom_right = _window_corners(centre, float(max(size)), input_hw)
    win_w, win_h = bottom_right - top_left
    frame_h, frame_w = frame.shape[:2]
    window = np.zeros((win_h, win_w, frame.shape[2]), dtype=np.float32)
    src_x0, src_x1 = max(0, top_left[0]), min(frame_w, bottom_right[0])
    src_y0, src_y1 = max(0, top_left[1]), min(frame_h, bottom_right[1])
    if src_x1 > src_x0 and src_y1 > src_y0:
        window[src_y0 - top_left[1]:src_y1 - top_left[1], src_x0 - top_left[0]:src_x1 - top_left[0]] = \
            frame[src_y0:src_y1, src_x0:src_x1]
    return cv2.resize(window, (input_hw[1], input_hw[0]))


def _gaussian_modulate(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Each map Gaussian-blurred with zero borders and rescaled to its original maximum: [N, K, H, W]."""
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    padded = np.pad(heatmaps, ((0, 0), (0, 0), (border, border), (border, border)))
    # maps stacked vertically: each keeps its own zero border, so the kernel never mixes two maps
    blurred = cv2.GaussianBlur(padded.reshape(n * k * (h + 2 * border), w + 2 * border), (kernel, kernel), 0)
    blurred = blurred.reshape(padded.shape)[:, :, border:-border, border:-border]
    peak = heatmaps.max(axis=(2, 3), keepdims=True)
    blurred_peak = blurred.max(axis=(2, 3), keepdims=True)
    ratio = np.divide(peak, blurred_peak, out=np.zeros_like(peak), where=blurred_peak != 0)
    return blurred * ratio


def _dark_offsets(log_maps: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Newton step -H^-1 g on the log-heatmap at integer peaks (px, py) [N, K]; zero near the border or where the
    Hessian is singular: [N, K, 2]."""
    n, k, h, w = log_maps.shape
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    x = np.where(inside, px, 2)
    y = np.where(inside, py, 2)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return log_maps[ni, ki, y + dy, x + dx].astype(np.float64)

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    det = dxx * dyy - dxy ** 2
    usable = inside & (det != 0)
    safe_det = np.where(usable, det, 1.0)
    offset_x = -(dyy * dx - dxy * dy) / safe_det
    offset_y = -(-dxy * dx + dxx * dy) / safe_det
    return np.where(usable[..., None], np.stack([offset_x, offset_y], axis=-1), 0.0)


def decode_heatmaps(heatmaps: np.ndarray, centres: np.ndarray, sizes: np.ndarray,
                    kernel: int = DARK_KERNEL) -> np.ndarray:
    """Keypoints from heatmaps [N, K, H, W] of crops with window `centres` [N, 2] and `sizes` [N, 2] (pixels):
    [N, K, 3] float32 (x, y, score) in frame pixels."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    peak_index = flat.argmax(axis=2)
    scores = flat.max(axis=2)
    px = (peak_index % w).astype(np.int64)
    py = (peak_index // w).astype(np.int64)
    coords = np.stack([px, py], axis=-1).astype(np.float64)
    coords[scores <= 0] = -1.0  # no positive response: the official decoder marks the point with -1
    log_maps = np.log(np.maximum(_gaussian_modulate(heatmaps, kernel), 1e-10))
    coords += _dark_offsets(log_maps, np.where(scores > 0, px, -1), np.where(scores > 0, py, -1))
    scale = sizes[:, None, :] / np.array([w, h], dtype=np.float64)  # [N, 1, 2] pixels per heatmap cell
    points = coords * scale + centres[:, None, :] - sizes[:, None, :] * 0.5
    return np.concatenate([points, scores[..., None]], axis=-1).astype(np.float32)


class WholeBodyPoseModel:
    """ViTPose whole-body ONNX model: frames + person boxes -> [F, 133, 3] keypoints (x, y, score) in pixels.

    `channel_order` "bgr" (default) reproduces the official pipeline, whose frames reach ViTPose with their
    channels reversed (a BGR->RGB conversion applied to frames that were already RGB); "rgb" feeds them as they are.
    """

    def __init__(self, onnx_path: str | os.PathLike, device: str = "auto", batch_size: int = 8,
                 channel_order: str = "bgr"):
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order: expected 'bgr' or 'rgb'; got {channel_order!r}")
        self.model = OnnxModel(onnx_path, device=device, max_batch=batch_size)
        shape = self.model.output_shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != WHOLE_BODY_POINTS):
            raise ValueError(f"{onnx_path} is not a whole-body pose model: expected heatmaps [N, {WHOLE_BODY_POINTS}, "
                             f"h, w] (vitpose_h_wholebody.onnx); found {list(shape)}")
        self.input_hw = self.model.input_hw or DEFAULT_INPUT_HW
        self.channel_order = channel_order

    def release(self) -> None:
        """Give back the ONNX session's memory until the next call (see OnnxModel.release)."""
        self.model.release()

    def prepare(self, frame_rgb: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model input [3, h, w] float32 for one frame and box, with the window's centre and size."""
        centre, size = crop_window(box, frame_rgb.shape[:2], self.input_hw)
        frame = frame_rgb[..., ::-1] if self.channel_order == "bgr" else frame_rgb
        crop = crop_person(frame, centre, size, self.input_hw)
        normalised = (crop / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return normalised.transpose(2, 0, 1).astype(np.float32), centre, size

    def predict(self, frames_rgb: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Keypoints [F, 133, 3] float32 for frames [F, H, W, 3] uint8 RGB and boxes [F, 4] (NaN or None: the
        whole frame)."""
        if frames_rgb.ndim != 4 or frames_rgb.dtype != np.uint8 or frames_rgb.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 RGB [F, H, W, 3]; got {frames_rgb.dtype} {frames_rgb.shape}")
        if boxes is not None and len(boxes) != len(frames_rgb):
            raise ValueError(f"boxes: expected one per frame ({len(frames_rgb)}); got {len(boxes)}")
        step = self.model.fixed_batch or self.model.max_batch
        results = []
        for start in range(0, len(frames_rgb), step):
            prepared = [self.prepare(frames_rgb[i], None if boxes is None else boxes[i])
                        for i in range(start, min(start + step, len(frames_rgb)))]
            inputs = np.stack([p[0] for p in prepared])
            centres = np.stack([p[1] for p in prepared])
            sizes = np.stack([p[2] for p in prepared])
            results.append(decode_heatmaps(self.model.run(inputs), centres, sizes))
        return np.concatenate(results)
