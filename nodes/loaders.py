"""Loader nodes: the Wan-Animate DiT, its VAE, LoRAs, the pose models and SAM2."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from safetensors import SafetensorError

from wan_animate.distributed.engine import workers_for
from wan_animate.loading.keys import LORA, reject_other_kind
from wan_animate.loading.model_handle import STORAGE, DiTHandle, DiTOptions
from wan_animate.loading.state_dict import CHECKPOINT_SUFFIXES, checkpoint_key_names
from wan_animate.loading.vae import load_vae
from wan_animate.model.vae_coding import VAECoder
from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.pose_model import WholeBodyPoseModel
from wan_animate.runtime.attention import BACKENDS

from .comfy_compat import add_model_extension, model_filenames, model_path, register_model_folder, torch_device
from .types import POSE_MODELS, SAM2, WAN_MODEL, WAN_VAE, PoseModels, Sam2Checkpoint

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CATEGORY = "WanAnimate/loaders"
register_model_folder("detection", {".onnx"})
register_model_folder("sam2", {".pt", ".pth", ".safetensors"})
add_model_extension("diffusion_models", ".gguf")


def checkpoint_filenames(folder: str, also: tuple[str, ...] = ()) -> list[str]:
    """The files of a model folder that the pack's loaders read (safetensors / .sft and torch files, plus the
    suffixes in `also`): ComfyUI also lists .pt2 / .pkl files, which no loader here can open."""
    return [name for name in model_filenames(folder) if name.lower().endswith(CHECKPOINT_SUFFIXES + also)]


class WanAnimateModelLoader:
    """Load a Wan2.2-Animate-14B diffusion model (official shards, Comfy repackaged, bf16/fp16/fp8, GGUF)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (checkpoint_filenames("diffusion_models", also=(".gguf",)), {
                    "tooltip": "models/diffusion_models/ (or models/unet/): e.g. "
                               "wan2.2_animate_14B_bf16.safetensors, "
                               "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors or a GGUF such as "
                               "Wan2.2-Animate-14B-Q4_K_S.gguf (stays quantised, for 8-12 GB cards)"}),
                "compute_dtype": (list(DTYPES), {"default": "bf16", "tooltip": "dtype the model computes in"}),
                "weight_storage": (list(STORAGE), {
                    "default": "default",
                    "tooltip": "default keeps the file's storage (fp8 files stay fp8, GGUF files stay "
                               "quantised); fp8_e4m3fn stores the transformer's linear layers in fp8 (half the "
                               "memory of bf16; not for GGUF)"}),
                "attention": (list(BACKENDS), {
                    "default": "sdpa",
                    "tooltip": "sage needs `pip install sageattention`, flash `pip install flash-attn`; each falls "
                               "back to sdpa (logged); auto: sdpa on H100/H200 and newer (measured fastest), else "
                               "sage, else flash, else sdpa"}),
                "offload_blocks": ("STRING", {
                    "default": "auto",
                    "tooltip": "transformer blocks streamed from host memory: 'auto' plans from free VRAM, or a "
                               "number 0-40 (0 = all on the GPU)"}),
            },
            "optional": {
                "prefetch_blocks": ("INT", {"default": 1, "min": 1, "max": 8,
                                            "tooltip": "offloaded blocks copied ahead of use"}),
                "compile": ("BOOLEAN", {"default": False, "tooltip": "torch.compile each transformer block"}),
                "gpus": ("INT", {"default": 1, "min": 1, "max": 16,
                                 "tooltip": "GPUs that share each sampling step (sequence parallel): > 1 runs the "
                                            "model in one worker process per GPU (cuda:0..gpus-1), each holding "
                                            "the weights unless shard_weights shards them"}),
                "fp8_matmul": ("BOOLEAN", {"default": False, "tooltip": "fp8 (e4m3) weights multiply on fp8 tensor "
                                                                     "cores (RTX 40xx, H100 and later; others upcast)"}),
                "shard_weights": (["auto", "on", "off"], {
                    "default": "auto",
                    "tooltip": "gpus > 1: 'on' splits each transformer block's weights over the GPUs (FSDP2; "
                               "bf16/fp32 files, no LoRAs), 'auto' does when the model does not fit one GPU"}),
            },
        }

    RETURN_TYPES = (WAN_MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_name, compute_dtype, weight_storage, attention, offload_blocks, prefetch_blocks=1,
             compile=False, gpus=1, fp8_matmul=False, shard_weights="auto"):
        offload = _offload_setting(offload_blocks)
        options = DiTOptions(DTYPES[compute_dtype], weight_storage, attention, offload, prefetch_blocks, compile,
                             gpus, fp8_matmul, shard_weights=shard_weights)
        handle = DiTHandle(model_path("diffusion_models", model_name), options)
        with _naming_file("model_name", model_name):
            if gpus > 1:
                workers_for(handle, torch_device())  # the workers load the weights, this process does not
            else:
                handle.model()
        return (handle,)


@contextmanager
def _naming_file(input_name: str, file_name: str) -> Iterator[None]:
    """Prefix a loader's ValueError (wrong file, missing keys...) with the node input and the file it names."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{input_name} '{file_name}': {error}") from error
    except SafetensorError as error:  # read straight by the DiT loader's lazy index
        raise ValueError(f"{input_name} '{file_name}' could not be read (an incomplete download or not a "
                         f"checkpoint?): {error}") from error


def _offload_setting(text: str) -> int | str:
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise ValueError(f"offload_blocks is {text!r}; expected 'auto' or a whole number of blocks (0-40)")


class WanAnimateVAELoader:
    """Load the Wan2.1 VAE (models/vae/wan_2.1_vae.safetensors or the official Wan2.1_VAE.pth)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (checkpoint_filenames("vae"), {"tooltip": "models/vae/wan_2.1_vae.safetensors"}),
            "dtype": (list(DTYPES), {"default": "fp32", "tooltip": "fp32 as the official code (every conditioning "
                                                               "latent and the chain between segments go through "
                                                               "the VAE); bf16 halves its memory"}),
        }, "optional": {
            "tiled": ("BOOLEAN", {"default": False, "tooltip": "code in overlapping spatial tiles: a 720p fp32 decode "
                                                             "needs about 7 GiB instead of 22 (slower); the sampler "
                                                             "tiles by itself when untiled would not fit"}),
            "tile": ("INT", {"default": 64, "min": 16, "max": 256, "step": 8,
                             "tooltip": "largest tile side in latent cells (8 px each)"}),
            "overlap": ("INT", {"default": 8, "min": 0, "max": 64, "tooltip": "tile overlap in latent cells"}),
        }}

    RETURN_TYPES = (WAN_VAE,)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, vae_name, dtype, tiled=False, tile=64, overlap=8):
        with _naming_file("vae_name", vae_name):
            vae = load_vae(model_path("vae", vae_name), device=torch_device(), dtype=DTYPES[dtype])
        return (VAECoder(vae, tiled, tile, overlap),)


class WanAnimateLoraLoader:
    """Put a LoRA on the model (relighting LoRA for Replacement, step-distillation LoRAs...); chain to stack."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (WAN_MODEL,),
            "lora_name": (checkpoint_filenames("loras"), {
                "tooltip": "models/loras/: WanAnimate_relight_lora_fp16.safetensors, relighting_lora.ckpt, "
                           "lightx2v step-distill LoRAs, ..."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05}),
        }}

    RETURN_TYPES = (WAN_MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "add_lora"
    CATEGORY = CATEGORY

    def add_lora(self, model: DiTHandle, lora_name, strength):
        path = model_path("loras", lora_name)
        with _naming_file("lora_name", lora_name):
            reject_other_kind(checkpoint_key_names(path), LORA)  # a model file here would be read whole at sampling
        return (model.with_lora(path, strength),)


class WanAnimatePoseModelLoader:
    """Load the person detector (YOLOv10-m) and whole-body pose model (ViTPose-H) ONNX files from models/detection."""

    @classmethod
    def INPUT_TYPES(cls):
        files = model_filenames("detection")
        return {"required": {
            "detector": (files, {"tooltip": "models/detection/yolov10m.onnx (official Wan2.2 release: det/)"}),
            "pose_model": (files, {"tooltip": "models/detection/vitpose_h_wholebody.onnx (official: pose2d/)"}),
        }}

    RETURN_TYPES = (POSE_MODELS,)
    RETURN_NAMES = ("pose_models",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, detector, pose_model):
        with _naming_file("detector", detector):
            person_detector = PersonDetector(model_path("detection", detector))
        with _naming_file("pose_model", pose_model):
            whole_body = WholeBodyPoseModel(model_path("detection", pose_model))
        return (PoseModels(person_detector, whole_body),)


class WanAnimateSAM2Loader:
    """Choose the SAM2 checkpoint for Replacement masks (models/sam2/sam2_hiera_large.pt; needs the sam2 package,
    installed as the README says)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (model_filenames("sam2"), {"tooltip": "models/sam2/sam2_hiera_large.pt"}),
        }}

    RETURN_TYPES = (SAM2,)
    RETURN_NAMES = ("sam2",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, checkpoint):
        return (Sam2Checkpoint(model_path("sam2", checkpoint), str(torch_device())),)


NODE_CLASS_MAPPINGS = {
    "WanAnimateModelLoader": WanAnimateModelLoader,
    "WanAnimateVAELoader": WanAnimateVAELoader,
    "WanAnimateLoraLoader": WanAnimateLoraLoader,
    "WanAnimatePoseModelLoader": WanAnimatePoseModelLoader,
    "WanAnimateSAM2Loader": WanAnimateSAM2Loader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanAnimateModelLoader": "Wan Animate Model Loader",
    "WanAnimateVAELoader": "Wan Animate VAE Loader",
    "WanAnimateLoraLoader": "Wan Animate LoRA",
    "WanAnimatePoseModelLoader": "Wan Animate Pose Models Loader",
    "WanAnimateSAM2Loader": "Wan Animate SAM2 Loader",
}
