"""Preprocess nodes: character image + driving video -> reference, pose skeletons, face crops, background and mask."""
from __future__ import annotations

import numpy as np

from wan_animate.preprocess.audio import trim_waveform
from wan_animate.preprocess.extract import extract_poses
from wan_animate.preprocess.face_crop import FACE_SCALE, crop_faces, detect_face_boxes, steady_face_boxes
from wan_animate.preprocess.masks import blur_mask, grow_mask, official_mask_postprocess, parse_user_points
from wan_animate.preprocess.prepare import MASK_METHODS, MODES, MaskSettings, prepare_inputs
from wan_animate.preprocess.render import render_animate_poses, render_replace_poses
from wan_animate.preprocess.resolution import MAX_SIDE
from wan_animate.preprocess.smoothing import smooth_keypoints
from wan_animate.preprocess.tracking import PERSON_CHOICES, parse_person_choice
from wan_animate.preprocess.video import driving_frames_for_fps

from .comfy_compat import progress_callback, save_previews
from .convert import image_to_u8, mask_to_tensor, mask_to_u8, u8_to_image
from .types import POSE_MODELS, POSES, SAM2, PoseModels

CATEGORY = "WanAnimate/preprocess"
SIZE = {"min": 64, "max": MAX_SIDE, "step": 16}
PERSON = ("STRING", {"default": "largest", "tooltip": f"which person of the video to follow: {PERSON_CHOICES} (N: "
                                                      "0 = largest, 1 = next largest...; point X Y: fractions 0..1 "
                                                      "of the first frame's width and height)"})


def _with_previews(result: tuple, **kinds: np.ndarray) -> dict:
    """A node result with preview strips for the web extension (`wan_animate_previews`, see web/)."""
    images, previews = [], []
    for kind, frames in kinds.items():
        saved = save_previews(frames, kind)
        if saved:
            previews.append({"kind": kind, "start": len(images), "count": len(saved)})
            images += saved
    return {"ui": {"images": images, "wan_animate_previews": previews}, "result": result}


_MASK_SHAPE_INPUTS = {
    "mask_iterations": ("INT", {"default": 3, "min": 0, "max": 20, "tooltip": "Replacement mask: official "
                                "dilation iterations (0 = the mask as found, no dilation or blockify)"}),
    "mask_kernel": ("INT", {"default": 7, "min": 1, "max": 63, "tooltip": "side of the square dilation kernel "
                            "(official 7)"}),
    "mask_block_w": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "blockify: columns of the grid over "
                             "the person's box (1 = the whole box, official; more follows the body's shape)"}),
    "mask_block_h": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "blockify: rows of the grid"}),
}
_FACE_BOX_INPUTS = {
    "face_scale": ("FLOAT", {"default": FACE_SCALE, "min": 0.5, "max": 4.0, "step": 0.05, "tooltip": "face box "
                             "area factor around the face points (official 1.3; larger shows more head)"}),
    "steady_face": ("BOOLEAN", {"default": False, "tooltip": "one face box size for the whole clip (stops the "
                                "crops zooming in and out)"}),
}


class WanAnimatePreprocess:
    """The official preprocessing in one node: poses, face crops, skeleton video, and for Replacement the mask.

    In Animation mode background_video and mask are 1-frame 1x1 black placeholders (Animation has no background
    video; full-size zeros would take hundreds of MB per 720p second): Embeds ignores them in animate mode."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_models": (POSE_MODELS,),
                "character_image": ("IMAGE", {"tooltip": "the character to animate (first image is used)"}),
                "driving_video": ("IMAGE", {"tooltip": "frames of the video whose motion drives the character"}),
                "mode": (list(MODES), {"default": "animate", "tooltip": "animate: background from the image; "
                                                                        "replace: the character replaces the person"}),
                "width": ("INT", {"default": 1280, **SIZE, "tooltip": "target area = width x height; the aspect "
                                                                      "comes from the image (animate) or video"}),
                "height": ("INT", {"default": 720, **SIZE}),
                "retarget": ("BOOLEAN", {"default": False,
                                         "tooltip": "adapt the driving skeleton to the character's proportions "
                                                    "(Animation only)"}),
                "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                        "tooltip": "temporal smoothing of the keypoints (0 = official, none)"}),
                "mask_method": (list(MASK_METHODS), {"default": "pose_box",
                                                     "tooltip": "Replacement mask: SAM2 (connect a SAM2 loader) or "
                                                                "boxes around the pose"}),
                "mask_grow": ("INT", {"default": 0, "min": -64, "max": 64, "tooltip": "pixels; negative shrinks"}),
                "mask_blur": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 64.0, "step": 0.5}),
            },
            "optional": {
                "sam2": (SAM2,),
                "tpose_character": ("IMAGE", {"tooltip": "the character edited into a T-pose (optional retargeting "
                                                         "bone lengths)"}),
                "tpose_driving": ("IMAGE", {"tooltip": "the driving video's first frame edited into a T-pose"}),
                "fps": ("FLOAT", {"default": 30.0, "min": -1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "frame rate to generate at: the driving video is resampled to it by "
                                             "timestamp (official: 30); -1 keeps the video's rate"}),
                "video_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.001,
                                        "tooltip": "the driving video's frame rate (connect GetVideoComponents' fps); "
                                                   "0 = unknown: the frames are used as they are"}),
                "audio": ("AUDIO", {"tooltip": "the driving video's sound; comes out cut to the generated frames"}),
                "person": PERSON,
                "points": ("STRING", {"default": "", "tooltip": "points clicked on the driving video's first frame "
                                                                "(the points editor on this node: left click = "
                                                                "person, right click = not the person), added to "
                                                                "SAM2's prompts; JSON {\"positive\": [[x, y]], "
                                                                "\"negative\": [[x, y]]}, x, y in 0..1"}),
                **_MASK_SHAPE_INPUTS,
                **_FACE_BOX_INPUTS,
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "IMAGE", "MASK", POSES, "STRING", "FLOAT", "AUDIO")
    RETURN_NAMES = ("reference", "pose_video", "face_video", "background_video", "mask", "poses", "report", "fps",
                    "audio")
    FUNCTION = "preprocess"
    CATEGORY = CATEGORY

    def preprocess(self, pose_models: PoseModels, character_image, driving_video, mode, width, height, retarget,
                   smoothing, mask_method, mask_grow, mask_blur, sam2=None, tpose_character=None,
                   tpose_driving=None, fps=30.0, video_fps=0.0, audio=None, person="largest", points="",
                   mask_iterations=3, mask_kernel=7, mask_block_w=1, mask_block_h=1, face_scale=FACE_SCALE,
                   steady_face=False):
        person_choice = parse_person_choice(person)
        user_points = parse_user_points(points)
        source_frames = len(driving_video)
        indices, fps = driving_frames_for_fps(source_frames, video_fps, fps)
        if indices != list(range(len(driving_video))):
            driving_video = driving_video[indices]  # [F', H, W, C], frames picked by timestamp
        video = image_to_u8(driving_video, "driving_video")
        mask_settings = MaskSettings(method=mask_method, grow=mask_grow, blur=mask_blur, iterations=mask_iterations,
                                     kernel=mask_kernel, w_len=mask_block_w, h_len=mask_block_h,
                                     sam2_checkpoint=sam2.path if sam2 else None,
                                     sam2_device=sam2.device if sam2 else "cuda", points=user_points)
        progress = progress_callback(2 * len(video))
        try:
            prepared = prepare_inputs(
                image_to_u8(character_image, "character_image")[0], video, pose_models.detector,
                pose_models.pose_model, mode=mode, area=width * height, retarget=retarget, smoothing=smoothing,
                tpose_character=None if tpose_character is None else image_to_u8(tpose_character,
                                                                                  "tpose_character")[0],
                tpose_driving=None if tpose_driving is None else image_to_u8(tpose_driving, "tpose_driving")[0],
                mask=mask_settings, progress=lambda done, total: progress(done), person=person_choice,
                face_scale=face_scale, steady_face=steady_face,
            )
        finally:
            pose_models.release()
        frames = len(prepared.pose)
        background, mask = prepared.background, prepared.mask
        if mode == "animate":  # unused by Animation: 1-frame 1x1 placeholders, which Embeds ignores in animate mode
            background, mask = np.zeros((1, 1, 1, 3), np.uint8), np.zeros((1, 1, 1), np.float32)
        if audio is not None:
            audio = {**audio, "waveform": trim_waveform(audio["waveform"], audio["sample_rate"], frames, fps)}
        rate = (f"driving video: {source_frames} frames at {video_fps:g} fps -> {frames} frames at {fps:g} fps"
                if video_fps else f"driving video: {frames} frames, taken as {fps:g} fps (video_fps unknown)")
        result = (u8_to_image(prepared.reference[None]), u8_to_image(prepared.pose), u8_to_image(prepared.face),
                  u8_to_image(background), mask_to_tensor(mask), prepared.driving_poses,
                  "\n".join([rate, *prepared.report]), fps, audio)
        previews = {"pose": prepared.pose, "face": prepared.face}
        if prepared.mask is not None:
            previews["mask"] = mask_to_u8(prepared.mask)
        return _with_previews(result, **previews)


class WanAnimatePoseExtract:
    """Detect the main person and their 133 whole-body keypoints in every frame (YOLO + ViTPose, ONNX)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_models": (POSE_MODELS,),
            "images": ("IMAGE",),
            "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "temporal smoothing of the keypoints (0 = none)"}),
        }, "optional": {"person": PERSON}}

    RETURN_TYPES = (POSES, "STRING")
    RETURN_NAMES = ("poses", "report")
    FUNCTION = "extract"
    CATEGORY = CATEGORY

    def extract(self, pose_models: PoseModels, images, smoothing, person="largest"):
        person_choice = parse_person_choice(person)
        frames = image_to_u8(images, "images")
        progress = progress_callback(2 * len(frames))
        try:
            poses = extract_poses(frames, pose_models.detector, pose_models.pose_model,
                                  progress=lambda done, total: progress(done), source="images",
                                  person=person_choice)
        finally:
            pose_models.release()
        if smoothing > 0:
            poses.keypoints = smooth_keypoints(poses.keypoints, smoothing)
        report = f"person followed in {int(poses.person_found.sum())} of {len(poses)} frames"
        return (poses, report)


class WanAnimateFaceCrops:
    """512x512 face crops from the face keypoints (official box: area x1.3, room above for the forehead)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "poses": (POSES,)}, "optional": dict(_FACE_BOX_INPUTS)}

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("face_video", "report")
    FUNCTION = "crop"
    CATEGORY = CATEGORY

    def crop(self, images, poses, face_scale=FACE_SCALE, steady_face=False):
        frames = image_to_u8(images, "images")
        if frames.shape[1:3] != tuple(poses.frame_size) or len(frames) != len(poses):
            raise ValueError(f"images are {len(frames)} frames of {frames.shape[1:3]}; the poses were found in "
                             f"{len(poses)} frames of {tuple(poses.frame_size)}: connect the same video")
        boxes = detect_face_boxes(poses.keypoints, poses.frame_size, face_scale).require_faces("images")
        chosen = steady_face_boxes(boxes.boxes, poses.frame_size) if steady_face else boxes.boxes
        faces = crop_faces(frames, chosen)
        report = f"{boxes.missing_count} of {len(frames)} frames had no face (nearest face box reused)"
        return _with_previews((u8_to_image(faces), report), face=faces)


class WanAnimateDrawPose:
    """Draw the skeleton video as the model was trained to read it (official v2 style)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "poses": (POSES,),
            "width": ("INT", {"default": 1280, **SIZE, "tooltip": "canvas width (Animation: the reference's)"}),
            "height": ("INT", {"default": 720, **SIZE}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_video",)
    FUNCTION = "draw"
    CATEGORY = CATEGORY

    def draw(self, poses, width, height):
        if (height, width) == tuple(poses.frame_size):
            pictures = render_replace_poses(poses.keypoints, poses.frame_size)
        else:
            pictures = render_animate_poses(poses.keypoints, poses.frame_size, (height, width))
        return _with_previews((u8_to_image(pictures),), pose=pictures)


class WanAnimateMaskAdjust:
    """Grow / shrink and blur a person mask, and make the background video (person zeroed) from it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "mask": ("MASK",),
            "grow": ("INT", {"default": 0, "min": -64, "max": 64, "tooltip": "pixels; negative shrinks"}),
            "blur": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 64.0, "step": 0.5}),
        }, "optional": {**_MASK_SHAPE_INPUTS, "mask_iterations": ("INT", {
            "default": 0, "min": 0, "max": 20,
            "tooltip": "official dilation + blockify first: dilation iterations (0 = off; the official pipeline "
                       "uses 3)"})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("background_video", "mask")
    FUNCTION = "adjust"
    CATEGORY = CATEGORY

    def adjust(self, images, mask, grow, blur, mask_iterations=0, mask_kernel=7, mask_block_w=1, mask_block_h=1):
        if mask.ndim == 2:
            mask = mask[None]
        if tuple(mask.shape) != tuple(images.shape[:3]):
            raise ValueError(f"mask is {tuple(mask.shape)}; expected {tuple(images.shape[:3])} to match the images")
        masks = mask.float().cpu().numpy()
        if mask_iterations > 0:
            masks = official_mask_postprocess(masks > 0.5, mask_iterations, mask_kernel, mask_block_w,
                                              mask_block_h).astype(np.float32)
        adjusted = blur_mask(grow_mask(masks, grow), blur)
        soft = mask_to_tensor(adjusted)
        background = images[..., :3] * (1 - soft[..., None])
        return _with_previews((background, soft), mask=mask_to_u8(adjusted))


NODE_CLASS_MAPPINGS = {
    "WanAnimatePreprocess": WanAnimatePreprocess,
    "WanAnimatePoseExtract": WanAnimatePoseExtract,
    "WanAnimateFaceCrops": WanAnimateFaceCrops,
    "WanAnimateDrawPose": WanAnimateDrawPose,
    "WanAnimateMaskAdjust": WanAnimateMaskAdjust,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanAnimatePreprocess": "Wan Animate Preprocess (pose, face, mask)",
    "WanAnimatePoseExtract": "Wan Animate Pose Extract",
    "WanAnimateFaceCrops": "Wan Animate Face Crops",
    "WanAnimateDrawPose": "Wan Animate Draw Pose",
    "WanAnimateMaskAdjust": "Wan Animate Mask Adjust",
}
