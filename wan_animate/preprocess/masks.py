"""Person masks for Replacement mode, and the mask post-processing of the official pipeline.

- `sam2_person_masks`: the official route: the SAM2 video predictor in chunks of 400 frames, prompted on key frames
  with 8 body points (nose, neck, shoulders, hips, ankles). Needs the optional `sam2` package and its weights.
- `box_person_masks`: a light alternative without any model: the box around the confident keypoints.
- `official_mask_postprocess` (7x7 dilation x 3, then "blockify" on a grid), `grow_mask`, `blur_mask`, and
  `replacement_inputs`, which zeroes the person out of the frames to make the background video.
Masks are [F, H, W] (or [H, W]); 1 = the person to replace.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..runtime.torch_install import SAFE_SAM2_INSTALL, torch_install_problems

SAM2_CHUNK_FRAMES = 400
SAM2_INSTALL_HINT = f"{SAFE_SAM2_INSTALL} (a plain `pip install sam2` may replace ComfyUI's torch)"
SAM2_DEFAULT_CONFIG = "sam2_hiera_l.yaml"
# The official 20-point body is built from COCO-WholeBody points as the mean of two points each; the SAM2 prompts
# use 8 of them: nose, neck (mean of the shoulders), right/left shoulder, right/left hip, right/left ankle.
_BODY20_FIRST = [0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20]
_BODY20_SECOND = [0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21]
SAM2_PROMPT_BODY20 = [0, 1, 2, 5, 8, 11, 10, 13]


# ---- official post-processing --------------------------------------------------------------------------------

def dilate_mask(mask: np.ndarray, kernel_size: int = 7, iterations: int = 3) -> np.ndarray:
    """Dilation with a square kernel of ones (official: 7x7, 3 iterations) of a [H, W] mask."""
    return cv2.dilate(mask, np.ones((kernel_size, kernel_size), np.uint8), iterations=iterations)


def blockify_mask(mask: np.ndarray, w_len: int = 1, h_len: int = 1) -> np.ndarray:
    """The official "blockify" of a binary [H, W] mask: the mask's bounding box (x_min..x_max, y_min..y_max of its
    pixels) is cut into a w_len x h_len grid of cells int(width / w_len) x int(height / h_len) (the last ones
    clipped at x_max / y_max, exclusive), and every cell touching the mask is filled. w_len = h_len = 1, the
    official default, fills the whole box. An empty mask is returned unchanged."""
    if w_len < 1 or h_len < 1:
        raise ValueError(f"grid: w_len and h_len must be at least 1; got {w_len}, {h_len}")
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return out
    x_min, x_max, y_min, y_max = xs.min(), xs.max(), ys.min(), ys.max()
    cell_w = max(int((x_max - x_min) / w_len), 1)  # the official code fails on a zero step; use 1 pixel
    cell_h = max(int((y_max - y_min) / h_len), 1)
    for x0 in range(x_min, x_max, cell_w):
        x1 = min(x0 + cell_w, x_max)
        for y0 in range(y_min, y_max, cell_h):
            y1 = min(y0 + cell_h, y_max)
            if mask[y0:y1, x0:x1].sum() > 0:
                out[y0:y1, x0:x1] = 1
    return out


def official_mask_postprocess(masks: np.ndarray, iterations: int = 3, kernel_size: int = 7, w_len: int = 1,
                              h_len: int = 1) -> np.ndarray:
    """Per frame of binary [F, H, W] uint8 masks: dilation then blockify, as the official Replacement pipeline does
    (with iterations 0 the masks are used as they are, without blockify)."""
    masks = _as_frames(masks, "masks").astype(np.uint8)
    if iterations <= 0:
        return masks.copy()
    return np.stack([blockify_mask(dilate_mask(m, kernel_size, iterations), w_len, h_len) for m in masks])


# ---- user adjustments ----------------------------------------------------------------------------------------

def _as_frames(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{name}: expected [F, H, W] or [H, W]; got shape {masks.shape}")
    return masks


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0, dilation) or shrink (pixels < 0, erosion) a [H, W] or [F, H, W] mask by a disc of that
    radius; works on binary and soft masks, keeps shape and dtype."""
    if pixels == 0:
        return np.array(mask, copy=True)
    frames = _as_frames(mask, "mask")
    radius = abs(int(pixels))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    work = frames.astype(np.float32) if frames.dtype == bool else frames
    op = cv2.dilate if pixels > 0 else cv2.erode
    out = np.stack([op(m, kernel, borderType=cv2.BORDER_REPLICATE) for m in work]).astype(frames.dtype)
    return out.reshape(np.shape(mask))


def blur_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soft edges: Gaussian blur (sigma = radius / 3, kernel 2 * ceil(radius) + 1) of a [H, W] or [F, H, W] mask,
    returned as float32 in 0..1."""
    if not 0 <= radius < float("inf"):
        raise ValueError(f"blur radius must be a finite number >= 0; got {radius}")
    frames = _as_frames(mask, "mask").astype(np.float32)
    if frames.max(initial=0.0) > 1.0:
        frames = frames / 255.0
    if radius == 0:
        return frames.reshape(np.shape(mask))
    size = 2 * int(np.ceil(radius)) + 1
    out = np.stack([cv2.GaussianBlur(m, (size, size), radius / 3.0, borderType=cv2.BORDER_REPLICATE)
                    for m in frames])
    return np.clip(out, 0.0, 1.0).reshape(np.shape(mask))


def box_person_masks(keypoints: np.ndarray, frame_size: tuple[int, int], margin: float = 0.1,
                     min_score: float = 0.3) -> np.ndarray:
    """[F, H, W] float32 masks: per frame the box around the keypoints scoring >= `min_score`, enlarged by
    `margin` times its size on every side and clipped to the frame. A frame without confident keypoints takes
    the box of the nearest frame that has one; raises ValueError when no frame has any."""
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints: expected [F, K, 3]; got shape {keypoints.shape}")
    height, width = frame_size
    boxes = np.full((len(keypoints), 4), np.nan)
    for t, frame in enumerate(keypoints):
        points = frame[frame[:, 2] >= min_score, :2]
        if len(points):
            low, high = points.min(axis=0), points.max(axis=0)
            pad = (high - low) * margin
            boxes[t] = [*(low - pad), *(high + pad)]
    known = np.flatnonzero(~np.isnan(boxes[:, 0]))
    if len(known) == 0:
        raise ValueError(f"no keypoint scores >= {min_score} in any of the {len(keypoints)} frames; "
                         "cannot build person boxes")
    nearest = known[np.abs(np.arange(len(boxes))[:, None] - known[None]).argmin(axis=1)]
    masks = np.zeros((len(keypoints), height, width), dtype=np.float32)
    for t, (x1, y1, x2, y2) in enumerate(boxes[nearest]):
        c0, r0 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        c1, r1 = min(int(np.ceil(x2)) + 1, width), min(int(np.ceil(y2)) + 1, height)
        masks[t, r0:r1, c0:c1] = 1.0
    return masks


def replacement_inputs(frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background, mask): the frames [F, H, W, 3] with the person zeroed (frame * (1 - mask)), same dtype as the
    frames (uint8 rounded), and the masks as float32 [F, H, W] in 0..1 (uint8 0/255 or 0/1 masks accepted)."""
    frames = np.asarray(frames)
    masks = _as_frames(masks, "masks")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected [F, H, W, 3]; got shape {frames.shape}")
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"masks: expected shape {frames.shape[:3]} to match the frames; got {masks.shape}")
    soft = masks.astype(np.float32)
    if masks.dtype == np.uint8 and soft.max(initial=0.0) > 1.0:
        soft = soft / 255.0
    soft = np.clip(soft, 0.0, 1.0)
    background = frames.astype(np.float32) * (1.0 - soft[..., None])
    if frames.dtype == np.uint8:
        background = np.clip(np.round(background), 0, 255).astype(np.uint8)
    else:
        background = background.astype(frames.dtype)
    return background, soft


# ---- SAM2 ---------------------------------------------------------------------------------------------------

def sam2_chunks(frame_count: int, chunk_frames: int = SAM2_CHUNK_FRAMES) -> list[tuple[int, int]]:
    """(start, end) of the official SAM2 chunks: consecutive runs of `chunk_frames` frames, the last one shorter."""
    return [(start, min(start + chunk_frames, frame_count)) for start in range(0, frame_count, chunk_frames)]


def sam2_key_frames(chunk_length: int) -> list[int]:
    """Frames of a chunk that get prompts: every (length // 4)-th frame from 0 when the chunk has more than 4
    frames (0, 100, 200, 300 for 400 frames; 5 to 7 key frames for chunks of 5 to 7 frames), else frame 0 only."""
    if chunk_length <= 0:
        return []
    step = chunk_length // 4 if chunk_length > 4 else chunk_length
    return list(range(0, chunk_length, step))


def body20_points(keypoints: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The official 20-point body [F, 20, 3] in normalised (x / W, y / H) coordinates, in float32 as the official
    code computes it; a frame whose 20 points all have a negative coordinate takes the previous frame's body."""
    height, width = frame_size
    norm = np.asarray(keypoints, dtype=np.float32).copy()
    norm[..., 0] /= width
    norm[..., 1] /= height
    body = (norm[:, _BODY20_FIRST] + norm[:, _BODY20_SECOND]) / 2
    for t in range(1, len(body)):
        if body[t, :, :2].min(axis=1).max() < 0:
            body[t] = body[t - 1]
    return body


def sam2_prompt_points(keypoints: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Positive click points [F, 8, 2] int32 (x, y pixels) of every frame: nose, neck, shoulders, hips, ankles of
    the official 20-point body, whatever their scores (the official code does not filter them)."""
    height, width = frame_size
    body = body20_points(keypoints, frame_size)[:, SAM2_PROMPT_BODY20, :2]
    return (body * np.array([[width, height]])).astype(np.int32)


def sam2_prompts(keypoints: np.ndarray, frame_size: tuple[int, int],
                 chunk_frames: int = SAM2_CHUNK_FRAMES) -> list[tuple[int, int, list[tuple[int, np.ndarray]]]]:
    """For each chunk: (start, end, [(frame index within the chunk, points [8, 2] int32), ...])."""
    points = sam2_prompt_points(keypoints, frame_size)
    return [(start, end, [(k, points[start + k]) for k in sam2_key_frames(end - start)])
            for start, end in sam2_chunks(len(keypoints), chunk_frames)]


@dataclass(frozen=True)
class UserPoints:
    """Points the user clicked on the first frame (the web extension's points editor): (x, y) as fractions 0..1 of
    the frame's width and height; `positive` on the person to replace, `negative` on what the mask must leave out."""

    positive: tuple[tuple[float, float], ...] = ()
    negative: tuple[tuple[float, float], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.positive or self.negative)


def parse_user_points(text: str) -> UserPoints:
    """The editor's JSON `{"positive": [[x, y], ...], "negative": [[x, y], ...]}` (x, y in 0..1) -> UserPoints;
    empty text = no points. ValueError naming the `points` input and what was wrong otherwise."""
    if not text.strip():
        return UserPoints()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"points: expected JSON like {{\"positive\": [[0.5, 0.4]], \"negative\": []}}; "
                         f"{error}") from error
    if not isinstance(data, dict) or set(data) - {"positive", "negative"}:
        raise ValueError(f"points: expected an object with the lists \"positive\" and \"negative\"; got {text!r}")
    lists = {}
    for kind in ("positive", "negative"):
        entries = data.get(kind, [])
        valid = isinstance(entries, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in p)
            for p in entries)
        if not valid:
            raise ValueError(f"points: \"{kind}\" must be a list of [x, y] pairs with x, y fractions 0..1 of the "
                             f"frame's width and height; got {entries!r}")
        lists[kind] = tuple((float(x), float(y)) for x, y in entries)
    return UserPoints(**lists)


def with_user_points(points: np.ndarray, user: UserPoints,
                     frame_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pose prompt points [N, 2] int32 (label 1) followed by the user's positive (label 1) and negative (label 0)
    points in pixels of a frame of `frame_size` (height, width): (points [N + P + Q, 2] int32, labels int32)."""
    height, width = frame_size
    clicked = np.array([*user.positive, *user.negative], np.float64).reshape(-1, 2) * np.array([width, height])
    clicked = np.clip(clicked, 0, [width - 1, height - 1]).astype(np.int32)
    labels = np.concatenate([np.ones(len(points) + len(user.positive), np.int32),
                             np.zeros(len(user.negative), np.int32)])
    return np.concatenate([np.asarray(points, np.int32).reshape(-1, 2), clicked]), labels


def _import_sam2():
    problems = torch_install_problems()
    if problems:
        raise RuntimeError("SAM2 masks cannot run: " + "; ".join(problems))
    try:
        import sam2.sam2_video_predictor as video_predictor_module
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as err:
        raise ImportError(f"SAM2 person masks need the sam2 package: {SAM2_INSTALL_HINT}") from err
    return video_predictor_module, build_sam2_video_predictor


def _frames_to_sam2_tensor(frames: np.ndarray, image_size: int):
    """Frames [F, H, W, 3] uint8 -> [F, 3, S, S] float32 as the official in-memory loader makes them: bicubic
    resize to the model's square size, 0..1, ImageNet mean/std."""
    import torch
    from PIL import Image

    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32)[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32)[:, None, None]
    images = torch.zeros(len(frames), 3, image_size, image_size, dtype=torch.float32)
    for i, frame in enumerate(frames):
        resized = np.asarray(Image.fromarray(frame).convert("RGB").resize((image_size, image_size),
                                                                          Image.BICUBIC))
        images[i] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    return (images - mean) / std


@contextlib.contextmanager
def _in_memory_frames(video_predictor_module, frames: np.ndarray, device: str) -> Iterator[None]:
    """Let the predictor's `init_state` take frames from memory: its frame loader is swapped, for the duration,
    for one that returns `frames` prepared like the official in-memory loader."""
    original = video_predictor_module.load_video_frames

    def load_frames(video_path, image_size, offload_video_to_cpu, *args, **kwargs):
        images = _frames_to_sam2_tensor(frames, image_size)
        if not offload_video_to_cpu:
            images = images.to(device)
        return images, frames.shape[1], frames.shape[2]

    video_predictor_module.load_video_frames = load_frames
    try:
        yield
    finally:
        video_predictor_module.load_video_frames = original


def sam2_person_masks(frames: np.ndarray, keypoints: np.ndarray, checkpoint: str,
                      config: str = SAM2_DEFAULT_CONFIG, device: str = "cuda",
                      chunk_frames: int = SAM2_CHUNK_FRAMES, predictor=None,
                      progress: Callable[[int, int], None] | None = None,
                      user_points: UserPoints = UserPoints()) -> np.ndarray:
    """Binary person masks [F, H, W] uint8 (1 = person) from the SAM2 video predictor, prompted as the official
    pipeline does (see `sam2_prompts`), plus the `user_points` clicked on the first frame, added to the prompts of
    frame 0. `checkpoint`: e.g. sam2/sam2_hiera_large.pt with config sam2_hiera_l.yaml; or pass an already built
    `predictor`. `progress(done, total)` after each chunk."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 RGB [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    if len(keypoints) != len(frames):
        raise ValueError(f"keypoints: expected one set per frame ({len(frames)}); got {len(keypoints)}")
    import torch

    video_predictor_module, build_predictor = _import_sam2()
    if predictor is None:
        predictor = build_predictor(config, checkpoint, device=device)
    add_points = getattr(predictor, "add_new_points_or_box", None) or predictor.add_new_points
    masks = np.zeros(frames.shape[:3], dtype=np.uint8)
    chunks = sam2_prompts(keypoints, frames.shape[1:3], chunk_frames)
    with torch.inference_mode():
        for done, (start, end, prompts) in enumerate(chunks, start=1):
            with _in_memory_frames(video_predictor_module, frames[start:end], device):
                state = predictor.init_state(video_path=frames[start:end])
            predictor.reset_state(state)
            for frame_index, points in prompts:
                labels = np.ones(len(points), np.int32)
                if start + frame_index == 0 and user_points:
                    points, labels = with_user_points(points, user_points, frames.shape[1:3])
                add_points(inference_state=state, frame_idx=frame_index, obj_id=1, points=points, labels=labels)
            for frame_index, _, mask_logits in predictor.propagate_in_video(state):
                masks[start + frame_index] = (mask_logits[0, 0] > 0.0).cpu().numpy().astype(np.uint8)
            if progress is not None:
                progress(done, len(chunks))
    return masks
