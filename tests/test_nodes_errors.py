"""Bad input through the node classes: every case fails with a clear error (which input, what was expected, what
was found) raised before any deep torch / numpy failure, and the pack imports without its optional dependencies."""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PACK_MODULE, REPO_ROOT
from onnx_fixtures import export_pose_model
from safetensors.torch import load_file, save_file
from tiny_models import CHARACTER_SIZE, FILES, VIDEO_FRAMES, VIDEO_SIZE, figure_frame, write_tiny_models

PREPROCESS = dict(mode="animate", width=64, height=64, retarget=False, smoothing=0.0, mask_method="pose_box",
                  mask_grow=0, mask_blur=0.0)
SAMPLER = dict(steps=1, shift=5.0, scheduler="euler", seed=0, cfg=1.0, segment_length=9, guide_frames="1")
LOADER = dict(compute_dtype="fp32", weight_storage="default", attention="sdpa", offload_blocks="0")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def root(tmp_path_factory, monkeypatch_module) -> Path:
    """The tiny model set plus the wrong files the tests feed to the loaders."""
    root = tmp_path_factory.mktemp("comfy_root")
    write_tiny_models(root)
    write_wrong_files(root / "models", root / "input")
    monkeypatch_module.setenv("WAN_ANIMATE_MODELS_DIR", str(root / "models"))
    monkeypatch_module.setenv("WAN_ANIMATE_INPUT_DIR", str(root / "input"))
    return root


def write_wrong_files(models: Path, inputs: Path) -> None:
    """Files of the wrong kind, incomplete or damaged, in the folders the nodes read."""
    dit_file, vae_file = models / "diffusion_models" / FILES["dit"], models / "vae" / FILES["vae"]
    (models / "loras").mkdir(exist_ok=True)  # write_tiny_models made it (the tiny LoRA)
    (models / "sam2").mkdir()
    dit = load_file(str(dit_file))
    animate_only = ("pose_patch_embedding.", "motion_encoder.", "face_encoder.", "face_adapter.")
    save_file({k: v for k, v in dit.items() if not k.startswith(animate_only)},
              str(models / "diffusion_models" / "wan_i2v_like.safetensors"))
    save_file({k: v for k, v in dit.items() if k != "blocks.1.ffn.0.weight"},
              str(models / "diffusion_models" / "partial.safetensors"))
    half = dit_file.read_bytes()
    (models / "diffusion_models" / "truncated.safetensors").write_bytes(half[: len(half) // 2])
    torch.save({"x": torch.zeros(64, 64)}, models / "diffusion_models" / "whole.pth")
    half = (models / "diffusion_models" / "whole.pth").read_bytes()
    (models / "diffusion_models" / "truncated.pth").write_bytes(half[: len(half) // 2])
    sdxl_lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                 "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}
    save_file(sdxl_lora, str(models / "loras" / "sdxl_style.safetensors"))
    save_file(sdxl_lora, str(models / "diffusion_models" / "lora_by_mistake.safetensors"))
    shutil.copy(vae_file, models / "diffusion_models" / "vae_by_mistake.safetensors")
    shutil.copy(vae_file, models / "loras" / "vae_as_lora.safetensors")
    shutil.copy(dit_file, models / "vae" / "dit_by_mistake.safetensors")
    export_pose_model(models / "detection" / "weak_vitpose.onnx", peak_scale=0.1)  # no confident keypoint
    (models / "detection" / "damaged.onnx").write_bytes(b"half an onnx file")
    (models / "sam2" / "sam2_hiera_large.pt").write_bytes(b"not read before the package check")
    save_file({"context": torch.zeros(1, 7, 24), "clip_fea": torch.zeros(1, 257, 20)},
              str(inputs / "batched_context.safetensors"))
    tiny_embeds = load_file(str(inputs / FILES["embeds"]))
    save_file({k: v for k, v in tiny_embeds.items() if k != "context_null"}, str(inputs / "no_negative.safetensors"))
    (inputs / "garbage.safetensors").write_bytes(b"not a safetensors file")


def run_node(pack, name: str, **inputs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    output = getattr(cls(), cls.FUNCTION)(**inputs)
    return output["result"] if isinstance(output, dict) else output


def video_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255.0


def driving_video(frames: int = VIDEO_FRAMES) -> torch.Tensor:
    return video_tensor(np.stack([figure_frame(VIDEO_SIZE, (i % 5) * 3) for i in range(frames)]))


def character_image() -> torch.Tensor:
    return video_tensor(figure_frame(CHARACTER_SIZE, 0)[None])


@pytest.fixture(scope="module")
def loaded(pack, root):
    """Models and a valid job (preprocessed once) that the tests spoil one input at a time."""
    pose_models = run_node(pack, "WanAnimatePoseModelLoader", detector=FILES["detector"], pose_model=FILES["pose"])[0]
    prepared = run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                        driving_video=driving_video(), **PREPROCESS)
    replaced = run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                        driving_video=driving_video(), **{**PREPROCESS, "mode": "replace"})
    positive, negative, clip = run_node(pack, "WanAnimateLoadEmbeddings", file=FILES["embeds"])
    return {
        "model": run_node(pack, "WanAnimateModelLoader", model_name=FILES["dit"], **LOADER)[0],
        "vae": run_node(pack, "WanAnimateVAELoader", vae_name=FILES["vae"], dtype="fp32")[0],
        "pose_models": pose_models,
        "embeds_inputs": dict(mode="animate", positive=positive, clip_vision_output=clip, reference=prepared[0],
                              pose_video=prepared[1], face_video=prepared[2], negative=negative),
        "replace_inputs": dict(mode="replace", positive=positive, clip_vision_output=clip, reference=replaced[0],
                               pose_video=replaced[1], face_video=replaced[2], negative=negative,
                               background_video=replaced[3], mask=replaced[4]),
    }


def embeds(pack, loaded, key: str = "embeds_inputs", **changes):
    return run_node(pack, "WanAnimateEmbeds", **{**loaded[key], **changes})[0]


def sample(pack, loaded, embeds_record, model=None, **changes):
    return run_node(pack, "WanAnimateSampler", model=model or loaded["model"], vae=loaded["vae"],
                    embeds=embeds_record, **{**SAMPLER, **changes})[0]


def assert_mentions(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, f"error message lacks {missing}: {message}"


# ----- loaders -----

def test_plain_wan_checkpoint_is_named_as_such(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name="wan_i2v_like.safetensors", **LOADER)
    assert_mentions(error, "I2V", "not Wan-Animate", "face_adapter")


def test_partial_checkpoint_names_the_missing_key(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name="partial.safetensors", **LOADER)
    assert_mentions(error, "missing 1 keys", "blocks.1.ffn.0.weight")


def test_vae_file_in_the_model_loader(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name="vae_by_mistake.safetensors", **LOADER)
    assert_mentions(error, "vae_by_mistake.safetensors", "VAE", "VAE Loader")


def test_lora_file_in_the_model_loader(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name="lora_by_mistake.safetensors", **LOADER)
    assert_mentions(error, "model_name 'lora_by_mistake.safetensors'", "a LoRA", "Wan Animate LoRA")


def test_dit_file_in_the_vae_loader(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateVAELoader", vae_name="dit_by_mistake.safetensors", dtype="fp32")
    assert_mentions(error, "dit_by_mistake.safetensors", "diffusion model", "Model Loader")


@pytest.mark.parametrize("detector, pose_model, words", [
    (FILES["pose"], FILES["pose"], ("detector 'tiny_vitpose.onnx'", "not a person detector", "[N, 300, 6]")),
    (FILES["detector"], FILES["detector"], ("pose_model 'tiny_yolo.onnx'", "not a whole-body pose model",
                                            "[N, 133, h, w]")),
    (FILES["detector"], "damaged.onnx", ("pose_model 'damaged.onnx'", "could not be read")),
], ids=["pose-as-detector", "detector-as-pose", "damaged"])
def test_wrong_onnx_files(pack, root, detector, pose_model, words):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePoseModelLoader", detector=detector, pose_model=pose_model)
    assert_mentions(error, *words)


@pytest.mark.parametrize("model_name", ["truncated.safetensors", "truncated.pth"])
def test_damaged_checkpoint(pack, root, model_name):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name=model_name, **LOADER)
    assert_mentions(error, f"model_name '{model_name}'", "could not be read", "incomplete download")


@pytest.mark.parametrize("node, inputs", [
    ("WanAnimateModelLoader", dict(model_name="nope.safetensors", **LOADER)),
    ("WanAnimateVAELoader", dict(vae_name="nope.safetensors", dtype="fp32")),
    ("WanAnimatePoseModelLoader", dict(detector="nope.onnx", pose_model=FILES["pose"])),
    ("WanAnimateSAM2Loader", dict(checkpoint="nope.pt")),
])
def test_missing_model_file(pack, root, node, inputs):
    with pytest.raises(FileNotFoundError) as error:
        run_node(pack, node, **inputs)
    assert_mentions(error, "nope.", "was not found", "models/")


def test_offload_blocks_text(pack, root):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateModelLoader", model_name=FILES["dit"], **{**LOADER, "offload_blocks": "many"})
    assert_mentions(error, "offload_blocks", "'many'", "auto")


def test_lora_for_another_architecture(pack, loaded):
    model = run_node(pack, "WanAnimateLoraLoader", model=loaded["model"], lora_name="sdxl_style.safetensors",
                     strength=1.0)[0]
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded), model=model)
    assert_mentions(error, "sdxl_style", "matches no layer", "Stable Diffusion")
    # nothing was changed: the same loaded model samples once the LoRA is taken out
    inputs = loaded["embeds_inputs"]
    short = embeds(pack, loaded, pose_video=inputs["pose_video"][:5], face_video=inputs["face_video"][:5])
    frames = sample(pack, loaded, short, segment_length=5)
    assert frames.shape == (5, *inputs["reference"].shape[1:3], 3) and bool(torch.isfinite(frames).all())


def test_model_file_in_the_lora_loader(pack, loaded):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateLoraLoader", model=loaded["model"], lora_name="vae_as_lora.safetensors",
                 strength=1.0)
    assert_mentions(error, "lora_name 'vae_as_lora.safetensors'", "a Wan VAE, not a LoRA", "VAE Loader")


# ----- preprocessing -----

def test_driving_video_without_a_person(pack, loaded):
    dark = torch.full((5, *VIDEO_SIZE, 3), 0.1)
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=loaded["pose_models"], character_image=character_image(),
                 driving_video=dark, **PREPROCESS)
    assert_mentions(error, "no person", "5 frames", "driving video")


@pytest.mark.parametrize("node", ["WanAnimatePreprocess", "WanAnimatePoseExtract"])
def test_empty_video(pack, loaded, node):
    empty = torch.zeros((0, *VIDEO_SIZE, 3))
    if node == "WanAnimatePreprocess":
        call = dict(character_image=character_image(), driving_video=empty, **PREPROCESS)
    else:
        call = dict(images=empty, smoothing=0.0)
    with pytest.raises(ValueError) as error:
        run_node(pack, node, pose_models=loaded["pose_models"], **call)
    assert_mentions(error, "0 frames", "at least 1")


def test_empty_character_image(pack, loaded):
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=loaded["pose_models"],
                 character_image=torch.zeros(0, *CHARACTER_SIZE, 3), driving_video=driving_video(), **PREPROCESS)
    assert_mentions(error, "character_image has 0 frames", "at least 1")


def test_empty_pose_video_in_embeds(pack, loaded):
    inputs = loaded["embeds_inputs"]
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, pose_video=inputs["pose_video"][:0], face_video=inputs["face_video"][:0])
    assert_mentions(error, "pose_video has 0 frames", "at least 1")


class CountingDetector:
    """The detector, counting the frames it is given (to see that a check came before the pass over the video)."""

    def __init__(self, detector):
        self.detector, self.frames = detector, 0

    def detect(self, frames):
        self.frames += len(frames)
        return self.detector.detect(frames)

    def release(self):
        self.detector.release()


def counting(pose_models):
    return dataclasses.replace(pose_models, detector=CountingDetector(pose_models.detector))


def test_character_without_pose_when_retargeting(pack, loaded):
    weak = run_node(pack, "WanAnimatePoseModelLoader", detector=FILES["detector"], pose_model="weak_vitpose.onnx")[0]
    weak = counting(weak)
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=weak, character_image=character_image(),
                 driving_video=driving_video(), **{**PREPROCESS, "retarget": True})
    assert_mentions(error, "no pose", "character image", "0 of 17 body keypoints", "at least 4 are needed")
    assert weak.detector.frames == 1  # the character only: the driving video was not processed


def test_sam2_mask_without_the_package(pack, loaded, monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2", None)
    sam2 = run_node(pack, "WanAnimateSAM2Loader", checkpoint="sam2_hiera_large.pt")[0]
    pose_models = counting(loaded["pose_models"])
    with pytest.raises(ImportError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                 driving_video=driving_video(), sam2=sam2, **{**PREPROCESS, "mode": "replace", "mask_method": "sam2"})
    assert_mentions(error, "mask method 'sam2'", "not installed", "pip install --no-deps --no-build-isolation sam2",
                    "pose_box")
    assert pose_models.detector.frames == 0


def test_sam2_mask_without_a_checkpoint(pack, loaded):
    pose_models = counting(loaded["pose_models"])
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                 driving_video=driving_video(), **{**PREPROCESS, "mode": "replace", "mask_method": "sam2"})
    assert_mentions(error, "mask method 'sam2'", "SAM2 checkpoint", "SAM2 loader")
    assert pose_models.detector.frames == 0


@pytest.mark.parametrize("file, error_type, words", [
    ("nope.safetensors", FileNotFoundError, ("'nope.safetensors'", "not found", "input folder")),
    ("garbage.safetensors", ValueError, ("'garbage.safetensors'", "not a readable .safetensors")),
    ("batched_context.safetensors", ValueError, ("context has shape (1, 7, 24)", "expected [tokens, 4096]")),
], ids=["missing", "garbage", "batched"])
def test_bad_embeddings_file(pack, root, file, error_type, words):
    with pytest.raises(error_type) as error:
        run_node(pack, "WanAnimateLoadEmbeddings", file=file)
    assert_mentions(error, *words)


# ----- embeds -----

@pytest.mark.parametrize("name", ["face_video", "background_video", "mask"])
def test_frame_count_mismatch(pack, loaded, name):
    inputs = loaded["replace_inputs"]
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, "replace_inputs", **{name: inputs[name][:-2]})
    assert_mentions(error, name, f"{VIDEO_FRAMES - 2} frames", f"{VIDEO_FRAMES}", "pose_video")


def test_reference_of_another_size_is_fitted(pack, loaded):
    reference = loaded["embeds_inputs"]["reference"]
    pose = loaded["embeds_inputs"]["pose_video"]
    wide = torch.zeros(1, reference.shape[1], reference.shape[2] * 2, 3)
    wide[:, :, : reference.shape[2]] = 1.0
    record = embeds(pack, loaded, reference=wide)
    assert tuple(record.inputs.reference.shape) == (*pose.shape[1:3], 3)
    fitted = record.inputs.reference
    height = pose.shape[1]
    # a 1:2 image fitted into the pose size: black bars above and below, white left half, black right half
    assert float(fitted[: height // 5].max()) == 0.0 and float(fitted[-(height // 5):].max()) == 0.0
    middle = fitted[height // 2]
    assert float(middle[: pose.shape[2] // 2 - 1].min()) == 1.0 and float(middle[pose.shape[2] // 2 + 1:].max()) == 0


def test_frames_not_multiples_of_16(pack, loaded):
    inputs = loaded["embeds_inputs"]
    cut = dict(reference=inputs["reference"][:, :-4], pose_video=inputs["pose_video"][:, :-4])
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, **cut)
    height, width = cut["pose_video"].shape[1:3]
    assert_mentions(error, "pose_video", f"{width}x{height}", "multiples of 16")


def test_face_crops_of_another_size(pack, loaded):
    face = loaded["embeds_inputs"]["face_video"][:, :256, :256]
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded, face_video=face))
    assert_mentions(error, "face_video", "512x512", "256x256")


def test_replacement_with_an_empty_mask(pack, loaded):
    mask = torch.zeros_like(loaded["replace_inputs"]["mask"])
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, "replace_inputs", mask=mask)
    assert_mentions(error, "mask is 0 everywhere", "'replace' mode")


def test_tpose_retargeting_needs_both_images(pack, loaded):
    pose_models = counting(loaded["pose_models"])
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                 driving_video=driving_video(), tpose_character=character_image(), **{**PREPROCESS, "retarget": True})
    assert_mentions(error, "both T-pose images")
    assert pose_models.detector.frames == 0


def test_replacement_without_background_or_mask(pack, loaded):
    inputs = {k: v for k, v in loaded["replace_inputs"].items() if k != "mask"}
    with pytest.raises(ValueError) as error:
        run_node(pack, "WanAnimateEmbeds", **inputs)
    assert_mentions(error, "Replacement", "background_video", "mask")


@pytest.mark.parametrize("conditioning", [
    "a prompt typed as text",
    torch.zeros(1, 7, 4096),
    [[torch.zeros(7, 4096), {}]],
    [],
    {"cond": torch.zeros(1, 7, 4096)},
], ids=["string", "tensor", "2d-tokens", "empty", "dict"])
def test_conditioning_not_from_clip_text_encode(pack, loaded, conditioning):
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, positive=conditioning)
    assert_mentions(error, "positive", "CONDITIONING", "CLIPTextEncode")


@pytest.mark.parametrize("clip_output", [
    None,
    torch.zeros(1, 257, 1280),
    {"penultimate_hidden_states": torch.zeros(1, 50, 768)},
    type("VisionOutput", (), {"penultimate_hidden_states": torch.zeros(1, 50, 768)})(),
], ids=["none", "tensor", "dict-vit-b", "object-vit-b"])
def test_wrong_clip_vision_output(pack, loaded, clip_output):
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, clip_vision_output=clip_output)
    assert_mentions(error, "clip_vision_output", "[1, 257, 1280]", "clip_vision_h")


def test_embeddings_of_another_model_size(pack, loaded):
    positive = [[torch.zeros(1, 7, 4096), {}]]
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded, positive=positive))
    width = loaded["model"].model().config.text_dim
    assert_mentions(error, "positive", "4096", str(width))


def test_clip_features_of_another_vision_model(pack, loaded):
    bigg = type("VisionOutput", (), {"penultimate_hidden_states": torch.zeros(1, 257, 1664)})()
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded, clip_vision_output=bigg))
    width = loaded["model"].model().config.clip_dim
    assert_mentions(error, "clip_vision_output", "1664 wide", f"reads {width}", "clip_vision_h")


# ----- sampler -----

def test_cfg_without_negative(pack, loaded):
    record = embeds(pack, loaded, negative=None)
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, record, cfg=2.0)
    assert_mentions(error, "cfg", "2.0", "negative")


def test_cfg_with_the_negative_of_an_embeddings_file_without_one(pack, loaded):
    positive, negative, clip = run_node(pack, "WanAnimateLoadEmbeddings", file="no_negative.safetensors")
    assert float(negative[0][0].abs().max()) == 0.0  # other nodes still get zeros
    record = embeds(pack, loaded, positive=positive, negative=negative, clip_vision_output=clip)
    assert record.inputs.context_null is None
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, record, cfg=2.0)
    assert_mentions(error, "cfg is 2.0", "negative", "'no_negative.safetensors'", "context_null", "set cfg to 1")


@pytest.mark.parametrize("length", [8, 10, 3])
def test_segment_length_not_4k_plus_1(pack, loaded, length):
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded), segment_length=length)
    assert_mentions(error, "segment_length", str(length), "4k+1")


def test_guide_frames_not_fewer_than_segment_length(pack, loaded):
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, embeds(pack, loaded), segment_length=5, guide_frames="5")
    assert_mentions(error, "guide_frames is 5", "fewer than segment_length (5)")


def test_the_lowest_shift_the_sampler_offers_is_one_the_library_accepts(pack, loaded):
    """GenerationSettings.validate refuses shift <= 0, so the node's range starts above 0 and its minimum runs."""
    lowest = pack.NODE_CLASS_MAPPINGS["WanAnimateSampler"].INPUT_TYPES()["required"]["shift"][1]["min"]
    assert lowest > 0
    frames = sample(pack, loaded, embeds(pack, loaded), shift=lowest, segment_length=5)
    assert frames.shape[0] == VIDEO_FRAMES and bool(torch.isfinite(frames).all())

def test_embeds_of_replacement_checked_again_in_sampler(pack, loaded):
    record = embeds(pack, loaded, "replace_inputs")
    record.inputs.person_mask = record.inputs.person_mask[:-1]
    with pytest.raises(ValueError) as error:
        sample(pack, loaded, record)
    assert_mentions(error, "mask", f"{VIDEO_FRAMES - 1}", f"{VIDEO_FRAMES}")


# ----- devices and memory -----

def test_animation_preprocess_returns_placeholders_and_warns_when_host_memory_is_short(pack, loaded, monkeypatch,
                                                                                        caplog):
    from wan_animate.runtime import host_memory

    monkeypatch.setattr(host_memory, "available_host_bytes", lambda: 1 << 20)
    with caplog.at_level(logging.WARNING, logger=host_memory.__name__):
        outputs = run_node(pack, "WanAnimatePreprocess", pose_models=loaded["pose_models"],
                           character_image=character_image(), driving_video=driving_video(), **PREPROCESS)
    reference, pose, face, background, mask = outputs[:5]
    assert tuple(background.shape) == (1, 1, 1, 3) and tuple(mask.shape) == (1, 1, 1)
    assert float(background.abs().max()) == 0.0 and float(mask.abs().max()) == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{VIDEO_FRAMES} frames" in warnings[0] and "GiB of host memory" in warnings[0]
    inputs = dict(loaded["embeds_inputs"], reference=reference, pose_video=pose, face_video=face)
    record = embeds(pack, loaded, **inputs, background_video=background, mask=mask)  # wired as in the workflows
    assert record.inputs.background is None and record.inputs.person_mask is None
    with pytest.raises(ValueError) as error:
        embeds(pack, loaded, **{**inputs, "mode": "replace"}, background_video=background, mask=mask)
    assert_mentions(error, "mask is 0 everywhere", "'replace' mode")


def test_pose_sessions_are_released_after_each_pass(pack, loaded):
    pose_models = loaded["pose_models"]
    poses, _ = run_node(pack, "WanAnimatePoseExtract", pose_models=pose_models, images=driving_video(), smoothing=0.0)
    assert len(poses) == VIDEO_FRAMES
    assert pose_models.detector.model.session is None and pose_models.pose_model.model.session is None


@pytest.mark.parametrize("device", ["mps", "xpu"])
def test_devices_other_than_cuda_and_cpu_are_refused(pack, root, monkeypatch, device):
    compat = sys.modules[f"{PACK_MODULE}.nodes.comfy_compat"]
    monkeypatch.setattr(compat, "model_management", types.SimpleNamespace(get_torch_device=lambda: torch.device(device)))
    with pytest.raises(RuntimeError) as error:
        run_node(pack, "WanAnimateVAELoader", vae_name=FILES["vae"], dtype="fp32")
    assert_mentions(error, f"'{device}'", "not support", "CUDA", "--cpu")


def test_cuda_and_cpu_devices_are_accepted():
    from wan_animate.runtime.devices import check_supported_device

    assert check_supported_device("cpu") == torch.device("cpu")
    assert check_supported_device("cuda:1") == torch.device("cuda", 1)  # also ROCm builds
    with pytest.raises(RuntimeError, match="'mps'"):
        check_supported_device("mps")


# ----- optional dependencies -----

OPTIONAL = ("sam2", "sageattention", "onnxruntime")


def test_pack_imports_without_optional_dependencies(root, monkeypatch):
    """sam2, sageattention and onnxruntime(-gpu) hidden: the pack still imports and lists every node; the first use
    of a missing package says how to install it."""
    fresh = ("wan_animate", "wan_animate_pack_bare")
    for name in [m for m in sys.modules if m.split(".")[0] in (*OPTIONAL, *fresh)]:
        monkeypatch.delitem(sys.modules, name)
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    spec = importlib.util.spec_from_file_location(
        "wan_animate_pack_bare", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    bare = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "wan_animate_pack_bare", bare)
    try:
        spec.loader.exec_module(bare)
        assert {"WanAnimateModelLoader", "WanAnimatePoseModelLoader", "WanAnimateSAM2Loader", "WanAnimatePreprocess",
                "WanAnimateEmbeds", "WanAnimateSampler"} <= set(bare.NODE_CLASS_MAPPINGS)
        for cls in bare.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        with pytest.raises(ImportError) as error:
            run_node(bare, "WanAnimatePoseModelLoader", detector=FILES["detector"], pose_model=FILES["pose"])
        assert_mentions(error, "needs onnxruntime", "pip install onnxruntime", "onnxruntime-gpu")
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in fresh]:
            del sys.modules[name]
