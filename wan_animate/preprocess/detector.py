"""Person detection with the official YOLOv10-m ONNX model (`det/yolov10m.onnx`).

Pre-processing as in the official pipeline: the RGB frame is stretched (no letterbox) to the 640x640 input with
bilinear resizing and scaled to 0..1. The model's [N, 300, 6] output rows are (x1, y1, x2, y2, score, class) in
input pixels; rows with score >= 0.05 are scaled back to the frame, truncated to integer (x, y, w, h) boxes and put
through class-agnostic NMS (IoU 0.5); person boxes (class 0, score > 0.05) are kept. YOLOv8-style [N, 4 + classes,
anchors] outputs with centre-size boxes are understood too, as the official code does.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .onnx_session import OnnxModel

DEFAULT_INPUT_HW = (640, 640)
PERSON_CLASS = 0


class PersonDetector:
    """Person boxes per frame from a YOLO ONNX model."""

    def __init__(self, onnx_path: str | os.PathLike, device: str = "auto", conf_threshold: float = 0.05,
                 iou_threshold: float = 0.5, batch_size: int = 8):
        self.model = OnnxModel(onnx_path, device=device, max_batch=batch_size)
        if len(self.model.output_shape) != 3:
            raise ValueError(f"{onnx_path} is not a person detector: expected a YOLO output of boxes [N, 300, 6] "
                             f"(yolov10m.onnx) or [N, 4 + classes, anchors]; found {list(self.model.output_shape)}")
        self.input_hw = self.model.input_hw or DEFAULT_INPUT_HW
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold

    def release(self) -> None:
        """Give back the ONNX session's memory until the next call (see OnnxModel.release)."""
        self.model.release()

    def preprocess(self, frame_rgb: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 RGB -> [3, h, w] float32 in 0..1 at the model's input size."""
        height, width = self.input_hw
        resized = cv2.resize(frame_rgb, (width, height))
        return (resized / 255.0).astype(np.float32).transpose(2, 0, 1)

    def detect(self, frames_rgb: np.ndarray) -> list[np.ndarray]:
        """Person boxes of each frame of [F, H, W, 3] uint8 RGB: a list of [N, 5] float64 arrays
        (x1, y1, x2, y2, score) in frame pixels, in NMS order (highest score first)."""
        frames_rgb = _check_frames(frames_rgb)
        frame_hw = frames_rgb.shape[1:3]
        results = []
        step = self.model.fixed_batch or self.model.max_batch
        for start in range(0, len(frames_rgb), step):
            batch = np.stack([self.preprocess(frame) for frame in frames_rgb[start:start + step]])
            raw = self.model.run(batch)  # [n, 300, 6]
            results.extend(self.postprocess(raw[i], frame_hw) for i in range(len(batch)))
        return results

    def postprocess(self, raw: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        """One image's raw output -> its person boxes [N, 5] (x1, y1, x2, y2, score) in frame pixels."""
        rows = raw.reshape(-1, raw.shape[-1]) if raw.shape[-1] == 6 else raw.reshape(raw.shape[-2], -1).T
        rows = rows.astype(np.float32)  # box arithmetic in float32, as the official code does it
        scale_x = frame_hw[1] / self.input_hw[1]
        scale_y = frame_hw[0] / self.input_hw[0]
        if rows.shape[1] == 6:
            rows = rows[rows[:, 4] >= self.conf_threshold]
            scores, classes = rows[:, 4], rows[:, 5]
            left, top = rows[:, 0] * scale_x, rows[:, 1] * scale_y
            box_w, box_h = rows[:, 2] * scale_x - left, rows[:, 3] * scale_y - top
        else:  # [anchors, 4 + classes]: centre x, centre y, width, height, one score per class
            rows = rows[rows[:, 4:].max(axis=1) >= self.conf_threshold]
            scores, classes = rows[:, 4:].max(axis=1), rows[:, 4:].argmax(axis=1)
            cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
            left, top = (cx - w / 2) * scale_x, (cy - h / 2) * scale_y
            box_w, box_h = w * scale_x, h * scale_y
        boxes_xywh = np.stack([left, top, box_w, box_h], axis=1).astype(np.int32)
        if len(boxes_xywh) == 0:
            return np.zeros((0, 5))
        scores = scores.astype(np.float64)
        kept = np.asarray(cv2.dnn.NMSBoxes(boxes_xywh.tolist(), scores.tolist(),
                                           self.conf_threshold, self.iou_threshold), dtype=np.int64).reshape(-1)
        persons = [i for i in kept if classes[i] == PERSON_CLASS and scores[i] > self.conf_threshold]
        if not persons:
            return np.zeros((0, 5))
        xywh = boxes_xywh[persons].astype(np.float64)
        return np.column_stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3],
                                scores[persons]])


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 RGB [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("frames: got 0 frames; at least 1 is needed")
    return frames
