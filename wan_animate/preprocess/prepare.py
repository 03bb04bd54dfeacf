"""The official preprocessing as one call: character image + driving video -> the generation's pixel inputs.

Sizes follow `resolution.generation_size`: about `area` pixels, sides multiples of 16, the aspect ratio of the
character image (Animation) or of the driving video (Replacement).
Animation: the character image is resized to that size and sets the output size;
the driving video keeps its own size for pose and face detection, and its skeletons are drawn at the frame size then
fitted into the character's size (or, with retargeting, adapted to the character and drawn at its size).
Replacement: the driving video is resized to that size and sets the output size; the character image is
fitted into it with black padding; the person mask comes from SAM2 (when a checkpoint is given) or from the pose
boxes, then is dilated and blockified as officially.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..runtime.host_memory import warn_if_host_memory_short
from .detector import PersonDetector
from .extract import PoseSequence, extract_image_pose, extract_poses
from .face_crop import FACE_SCALE, crop_faces, detect_face_boxes, steady_face_boxes
from .masks import (SAM2_INSTALL_HINT, UserPoints, blur_mask, box_person_masks, grow_mask,
                    official_mask_postprocess, replacement_inputs, sam2_person_masks)
from .pose_model import WholeBodyPoseModel
from .render import render_animate_poses, render_replace_poses
from .resolution import generation_size
from .retarget import retarget_poses
from .smoothing import smooth_keypoints
from .tracking import PersonChoice
from .video import DEFAULT_AREA, padding_resize, resize_frames, resize_to

MODES = ("animate", "replace")
MASK_METHODS = ("pose_box", "sam2")
FACE_SIZE = 512  # side of the face crops


@dataclass
class MaskSettings:
    """Replacement mask: `method` pose_box | sam2 (needs `sam2_checkpoint`; `points` clicked on the first frame
    join its prompts), the official dilation (`iterations` of a `kernel` x `kernel` square, 0 = none) and blockify
    grid (`w_len` x `h_len` cells), then user `grow` (px, negative shrinks) and `blur` (px radius)."""

    method: str = "pose_box"
    sam2_checkpoint: str | None = None
    sam2_device: str = "cuda"
    iterations: int = 3
    kernel: int = 7
    w_len: int = 1
    h_len: int = 1
    grow: int = 0
    blur: float = 0.0
    points: UserPoints = UserPoints()


@dataclass
class PreparedInputs:
    """Pixel inputs of one job, uint8 RGB; `mask` float32 0..1 (1 = the person to replace)."""

    reference: np.ndarray
    pose: np.ndarray
    face: np.ndarray
    driving_poses: PoseSequence
    background: np.ndarray | None = None
    mask: np.ndarray | None = None
    report: list[str] = field(default_factory=list)


def prepare_inputs(
    character: np.ndarray,
    video: np.ndarray,
    detector: PersonDetector,
    pose_model: WholeBodyPoseModel,
    mode: str = "animate",
    area: int = DEFAULT_AREA,
    retarget: bool = False,
    smoothing: float = 0.0,
    tpose_character: np.ndarray | None = None,
    tpose_driving: np.ndarray | None = None,
    mask: MaskSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
    person: PersonChoice = PersonChoice(),
    face_scale: float = FACE_SCALE,
    steady_face: bool = False,
) -> PreparedInputs:
    """Character image [H, W, 3] and driving video [F, H, W, 3] (uint8 RGB) -> reference, pose and face frames
    (and, for Replacement, background and mask). `tpose_character` / `tpose_driving`: optional images of the
    character and of the driving video's first frame edited into a T-pose (retargeting's bone lengths). `person`:
    which person of the driving video is followed (pose, face crops, mask). `face_scale`: area factor of the face
    box (official 1.3); `steady_face`: one face-box size for the whole clip (face_crop.steady_face_boxes)."""
    if mode not in MODES:
        raise ValueError(f"mode is {mode!r}; expected one of {MODES}")
    if not face_scale > 0:
        raise ValueError(f"face_scale is {face_scale}; expected a positive area factor (official 1.3)")
    if mode == "replace" and retarget:
        raise ValueError("retargeting applies to Animation mode only; turn it off for Replacement")
    if retarget and (tpose_character is None) != (tpose_driving is None):
        raise ValueError("T-pose retargeting needs both T-pose images (character and driving first frame) or neither")
    character = np.asarray(character)
    width, height = generation_size(mode, character.shape[1::-1], video.shape[2:0:-1], area)
    warn_if_host_memory_short(job_frame_bytes(len(video), height, width, mode),
                              f"a job of {len(video)} frames at {width}x{height} ({mode})")
    if mode == "replace":
        check_mask_settings(mask or MaskSettings())
        video = resize_frames(video, height, width)
        reference = padding_resize(character, height, width)
    else:
        reference = resize_to(character, height, width)
    # the character's pose first: a character without one fails before the long pass over the video
    ref_pose = extract_image_pose(reference, detector, pose_model) if retarget else None
    poses = extract_poses(video, detector, pose_model, progress=progress, person=person)
    if smoothing > 0:
        poses.keypoints = smooth_keypoints(poses.keypoints, smoothing)
    chosen = "" if person == PersonChoice() else f" ({person})"
    report = [f"person{chosen} followed in {int(poses.person_found.sum())} of {len(poses)} frames"]

    faces = detect_face_boxes(poses.keypoints, poses.frame_size, face_scale).require_faces("driving video")
    if faces.missing_count:
        report.append(f"{faces.missing_count} of {len(poses)} frames had no face; the nearest face box was reused")
    face_boxes = steady_face_boxes(faces.boxes, poses.frame_size) if steady_face else faces.boxes
    face = crop_faces(video, face_boxes)

    ref_size = reference.shape[:2]
    if mode == "replace":
        pose = render_replace_poses(poses.keypoints, poses.frame_size)
    elif retarget:
        pose = _retargeted(poses, reference, ref_pose, detector, pose_model, tpose_character, tpose_driving, report)
    else:
        pose = render_animate_poses(poses.keypoints, poses.frame_size, ref_size)
    prepared = PreparedInputs(reference=reference, pose=pose, face=face, driving_poses=poses, report=report)
    if mode == "replace":
        prepared.background, prepared.mask = _replacement(video, poses, mask or MaskSettings(), report)
    return prepared


def job_frame_bytes(frames: int, height: int, width: int, mode: str) -> int:
    """Host memory the frames of one job take from preprocessing to the generated video: the pose and face frames
    (uint8 here, float32 as ComfyUI IMAGEs), the generated video (float32) and, for Replacement, the resized video,
    background and mask."""
    pixels = frames * height * width
    face_pixels = frames * FACE_SIZE * FACE_SIZE
    total = pixels * 3 * (1 + 4) + face_pixels * 3 * (1 + 4) + pixels * 3 * 4
    if mode == "replace":
        total += pixels * 3 + pixels * 3 * (1 + 4) + pixels * 4 * 2
    return total


def _retargeted(poses: PoseSequence, reference: np.ndarray, ref_pose: PoseSequence, detector: PersonDetector,
                pose_model: WholeBodyPoseModel, tpose_character: np.ndarray | None,
                tpose_driving: np.ndarray | None, report: list[str]) -> np.ndarray:
    tpose_ref = tpose_drv = None
    if tpose_character is not None:
        tpose_ref = extract_image_pose(padding_resize(tpose_character, *reference.shape[:2]), detector,
                                       pose_model).keypoints[0]
        tpose_drv = extract_image_pose(padding_resize(tpose_driving, *poses.frame_size), detector,
                                       pose_model).keypoints[0]
        report.append("retargeted with T-pose bone lengths")
    else:
        report.append("retargeted to the character's proportions")
    retargeted = retarget_poses(poses.keypoints, ref_pose.keypoints[0], poses.frame_size, reference.shape[:2],
                                tpose_driving=tpose_drv, tpose_ref=tpose_ref)
    return retargeted.render()


def check_mask_settings(settings: MaskSettings) -> None:
    """Raise before any work when the Replacement mask cannot be made: unknown method, or SAM2 without its
    checkpoint or package."""
    if settings.method not in MASK_METHODS:
        raise ValueError(f"mask method is {settings.method!r}; expected one of {MASK_METHODS}")
    if settings.method != "sam2":
        return
    if not settings.sam2_checkpoint:
        raise ValueError("mask method 'sam2' needs a SAM2 checkpoint (connect a SAM2 loader with "
                         "models/sam2/sam2_hiera_large.pt), or choose mask method 'pose_box'")
    try:
        import sam2  # noqa: F401  (only whether it imports)
    except ImportError as error:
        raise ImportError(f"mask method 'sam2' needs the sam2 package, which is not installed: {SAM2_INSTALL_HINT}; "
                          "or choose mask method 'pose_box'") from error


def _replacement(video: np.ndarray, poses: PoseSequence, settings: MaskSettings,
                 report: list[str]) -> tuple[np.ndarray, np.ndarray]:
    if settings.method == "sam2":  # settings checked by check_mask_settings
        masks = sam2_person_masks(video, poses.keypoints, settings.sam2_checkpoint, device=settings.sam2_device,
                                  user_points=settings.points)
    else:
        masks = (box_person_masks(poses.keypoints, poses.frame_size) > 0.5).astype(np.uint8)
        if settings.points:
            report.append("the clicked points were not used: only mask method 'sam2' takes them")
    masks = official_mask_postprocess(masks, settings.iterations, settings.kernel, settings.w_len, settings.h_len)
    masks = blur_mask(grow_mask(masks.astype(np.float32), settings.grow), settings.blur)
    report.append(f"person mask ({settings.method}) covers {100 * float(masks.mean()):.1f}% of the frames")
    return replacement_inputs(video, masks)
