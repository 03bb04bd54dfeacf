"""Video frames -> per-frame 133-point whole-body keypoints of the main person (detector + tracker + pose model)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .detector import PersonDetector
from .pose_model import WholeBodyPoseModel
from .tracking import Track, check_person_choice, official_per_frame_choice, track_main_person

ProgressFn = Callable[[int, int], None]
BODY_POINTS = slice(0, 17)


@dataclass
class PoseSequence:
    """The main person's pose in every frame.

    keypoints: [F, 133, 3] float32 COCO-WholeBody (x, y, score) in frame pixels (0-16 body, 17-22 feet, 23-90 face,
        91-111 left hand, 112-132 right hand) - the format of the official ViTPose output.
    boxes: [F, 4] float32 (x1, y1, x2, y2) of the person box the pose was computed in; the whole frame where there
        was none.
    person_found: [F] bool, True where the detector found the followed person in that frame (False: the box was
        carried over from an earlier frame, or the pose comes from the whole frame).
    frame_size: (height, width) of the frames.
    """
    keypoints: np.ndarray
    boxes: np.ndarray
    person_found: np.ndarray
    frame_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keypoints)


def _check_video(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 RGB frames [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError(f"{name} has 0 frames; at least 1 is needed")
    return frames


def _detect_with_progress(frames: np.ndarray, detector: PersonDetector, progress: ProgressFn | None,
                          total: int, chunk: int) -> list[np.ndarray]:
    detections = []
    for start in range(0, len(frames), chunk):
        detections.extend(detector.detect(frames[start:start + chunk]))
        if progress is not None:
            progress(len(detections), total)
    return detections


def extract_poses(frames_u8: np.ndarray, detector: PersonDetector, pose_model: WholeBodyPoseModel,
                  progress: ProgressFn | None = None, track: bool = True, carry_over: bool = True,
                  chunk: int = 32, source: str = "driving video", person_order: str = "main",
                  person_index: int = 0) -> PoseSequence:
    """Keypoints of the main person in every frame of `frames_u8` [F, H, W, 3] uint8 RGB.

    track=True chooses the main person once (largest person, official rule; or the `person_index`-th by
    `person_order`, see tracking.choose_person) and follows it across frames;
    track=False re-chooses in every frame as the official pipeline does. Where the followed person is not detected
    the previous box is reused (`carry_over`), otherwise the whole frame goes to the pose model (the official
    behaviour); either way `person_found` is False there. `progress(done, total)` is called after each chunk of
    work (total = 2 F: detection, then pose). Raises ValueError, naming `source`, when no person is detected in any
    frame.
    """
    frames = _check_video(frames_u8, source)
    check_person_choice(person_order, person_index)
    total = 2 * len(frames)
    detections = _detect_with_progress(frames, detector, progress, total, chunk)
    if not any(len(d) for d in detections):
        raise ValueError(f"no person was detected in any of the {len(frames)} frames of the {source}")
    path: Track = track_main_person(detections, carry_over=carry_over, order=person_order, index=person_index) \
        if track else official_per_frame_choice(detections)
    if not path.found.any():
        most = max(len(d) for d in detections)
        raise ValueError(f"person_index {person_index} ({person_order}) needs {person_index + 1} people in a frame; "
                         f"the {source} shows at most {most}")
    keypoints = []
    for start in range(0, len(frames), chunk):
        keypoints.append(pose_model.predict(frames[start:start + chunk], path.boxes[start:start + chunk]))
        if progress is not None:
            progress(len(frames) + min(start + chunk, len(frames)), total)
    height, width = frames.shape[1:3]
    boxes = np.where(np.isnan(path.boxes), np.array([0.0, 0.0, width, height]), path.boxes).astype(np.float32)
    return PoseSequence(keypoints=np.concatenate(keypoints), boxes=boxes, person_found=path.found,
                        frame_size=(height, width))


def extract_image_pose(image_u8: np.ndarray, detector: PersonDetector, pose_model: WholeBodyPoseModel,
                       min_points: int = 4, min_score: float = 0.3) -> PoseSequence:
    """Keypoints of the main person in one image (the character image) [H, W, 3] uint8 RGB, as a 1-frame
    PoseSequence. Without a detection the whole image is used (as officially); raises ValueError when fewer than
    `min_points` of the 17 body keypoints score at least `min_score`."""
    image = np.asarray(image_u8)
    if image.ndim != 3:
        raise ValueError(f"character image: expected uint8 RGB [H, W, 3]; got {image.dtype} {image.shape}")
    frames = _check_video(image[None], "character image")
    path = official_per_frame_choice(detector.detect(frames))
    keypoints = pose_model.predict(frames, path.boxes)
    confident = int((keypoints[0, BODY_POINTS, 2] >= min_score).sum())
    if confident < min_points:
        raise ValueError(f"no pose could be detected in the character image: {confident} of 17 body keypoints "
                         f"score >= {min_score}, at least {min_points} are needed (use an image showing the "
                         f"character's body clearly)")
    height, width = frames.shape[1:3]
    boxes = np.where(np.isnan(path.boxes), np.array([0.0, 0.0, width, height]), path.boxes).astype(np.float32)
    return PoseSequence(keypoints=keypoints, boxes=boxes, person_found=path.found, frame_size=(height, width))
