"""The example graphs, node by node: the single source of workflows/*.json and workflows/api/*.json."""
from __future__ import annotations

from dataclasses import dataclass, field

HF = "https://huggingface.co"
MODELS = {
    "bf16": ("wan2.2_animate_14B_bf16.safetensors", "diffusion_models",
             f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/"
             "wan2.2_animate_14B_bf16.safetensors"),
    "fp8": ("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
            f"{HF}/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/Wan22Animate/"
            "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"),
    "vae": ("wan_2.1_vae.safetensors", "vae",
            f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors"),
    "t5": ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
           f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
           "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "clip_vision": ("clip_vision_h.safetensors", "clip_vision",
                    f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/"
                    "clip_vision_h.safetensors"),
    "detector": ("yolov10m.onnx", "detection",
                 f"{HF}/Wan-AI/Wan2.2-Animate-14B/resolve/main/process_checkpoint/det/yolov10m.onnx"),
    "pose": ("vitpose_h_wholebody.onnx", "detection",
             f"{HF}/Wan-AI/Wan2.2-Animate-14B/resolve/main/process_checkpoint/pose2d/vitpose_h_wholebody.onnx"),
    "relight": ("WanAnimate_relight_lora_fp16.safetensors", "loras",
                f"{HF}/Kijai/WanVideo_comfy/resolve/main/LoRAs/Wan22_relight/WanAnimate_relight_lora_fp16.safetensors"),
    "kontext": ("flux1-dev-kontext_fp8_scaled.safetensors", "diffusion_models",
                f"{HF}/Comfy-Org/flux1-kontext-dev_ComfyUI/resolve/main/split_files/diffusion_models/"
                "flux1-dev-kontext_fp8_scaled.safetensors"),
    "clip_l": ("clip_l.safetensors", "text_encoders",
               f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "t5_flux": ("t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors"),
    "flux_vae": ("ae.safetensors", "vae",
                 f"{HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"),
    "lightx2v": ("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras",
                 f"{HF}/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                 "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"),
}
PROMPT = "视频中的人在做动作"
# The official use_flux edit prompts (Wan2.2 preprocessing, get_editing_prompts): a T-pose for a landscape picture,
# arms down for a portrait one; the variants for a picture without visible feet or hands end after "Hands are
# visible in the image." or read "Change the person to face forward."
TPOSE_PROMPT = ("Change the person to a standard T-pose (facing forward with arms extended). The person is standing. "
                "Feet and Hands are visible in the image.")
ARMS_DOWN_PROMPT = ("Change the person to a standard pose with the face oriented forward and arms extending straight "
                    "down by the sides. The person is standing. Feet and Hands are visible in the image.")
NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
            "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
            "三条腿，背景人很多，倒着走")


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    title: str | None = None
    models: tuple[dict, ...] = ()


def model(key: str) -> dict:
    name, directory, url = MODELS[key]
    return {"name": name, "url": url, "directory": directory}


def note(keys: list[str], extra: str) -> str:
    """The Read me text: every model file with its download link (ComfyUI's missing-models dialog only offers
    downloads of .safetensors/.sft files, so the .onnx detectors are downloaded from here) and its folder."""
    lines = [f"- [{MODELS[k][0]}]({MODELS[k][2]}) in `models/{MODELS[k][1]}/`" for k in keys]
    return "## Model files\n" + "\n".join(lines) + "\n\n" + extra


def graph(mode: str, dit: str = "bf16", loras: tuple[tuple[str, float], ...] = (), offload: str = "auto",
          storage: str = "default", steps: int = 20, segment: int = 77, guide: str = "1",
          colour: bool = False, resume: str = "", tiled_vae: bool = False, extra: str = "",
          prompts: str | None = None, sampler: dict | None = None, tpose: bool = False) -> list[Node]:
    """One complete graph: models, text/CLIP encoders, preprocessing, embeds, sampler, video out.

    prompts: `<frame>: <prompt>` lines for a Prompt Schedule in place of the single prompt.
    sampler: further Sampler widgets (its optional controls).
    tpose: retarget with T-pose edits of the character and the driving video's first frame by FLUX.1 Kontext.
    """
    nodes = [
        Node(1, "WanAnimateModelLoader", (0, 0), {"model_name": MODELS[dit][0], "compute_dtype": "bf16",
                                                  "weight_storage": storage, "attention": "sdpa",
                                                  "offload_blocks": offload, "prefetch_blocks": 1,
                                                  "compile": False}, models=(model(dit),)),
        Node(2, "WanAnimateVAELoader", (0, 300), {"vae_name": MODELS["vae"][0], "dtype": "bf16", "tiled": tiled_vae,
                                                  "tile": 64, "overlap": 8},
             models=(model("vae"),)),
        Node(3, "CLIPLoader", (0, 520), {"clip_name": MODELS["t5"][0], "type": "wan", "device": "default"},
             models=(model("t5"),)),
        Node(4, "CLIPTextEncode", (380, 520), {"text": PROMPT}, {"clip": (3, 0)}, title="Prompt") if prompts is None
        else Node(4, "WanAnimatePromptSchedule", (380, 520), {"prompts": prompts}, {"clip": (3, 0)},
                  title="Prompt per segment"),
        Node(5, "CLIPTextEncode", (380, 720), {"text": NEGATIVE}, {"clip": (3, 0)}, title="Negative prompt"),
        Node(6, "CLIPVisionLoader", (0, 690), {"clip_name": MODELS["clip_vision"][0]},
             models=(model("clip_vision"),)),
        Node(7, "LoadImage", (0, 820), {"image": "character.png"}, title="Character image"),
        Node(8, "LoadVideo", (0, 1220), {"file": "driving.mp4"}, title="Driving video"),
        Node(9, "GetVideoComponents", (380, 1220), links={"video": (8, 0)}),
        Node(10, "WanAnimatePoseModelLoader", (380, 960), {"detector": MODELS["detector"][0],
                                                          "pose_model": MODELS["pose"][0]},
             models=(model("detector"), model("pose"))),
        Node(11, "WanAnimatePreprocess", (760, 820),
             {"mode": mode, "width": 1280, "height": 720, "retarget": tpose, "smoothing": 0.0,
              "mask_method": "pose_box", "mask_grow": 0, "mask_blur": 0.0},
             {"pose_models": (10, 0), "character_image": (7, 0), "driving_video": (9, 0),
              **({"tpose_character": (57, 0), "tpose_driving": (67, 0)} if tpose else {})}),
        Node(12, "CLIPVisionEncode", (1140, 660), {"crop": "none"}, {"clip_vision": (6, 0), "image": (11, 0)}),
        Node(13, "WanAnimateEmbeds", (1140, 840), {"mode": mode},
             {"positive": (4, 0), "negative": (5, 0), "clip_vision_output": (12, 0), "reference": (11, 0),
              "pose_video": (11, 1), "face_video": (11, 2),
              **({"background_video": (11, 3), "mask": (11, 4)} if mode == "replace" else {})}),
    ]
    model_source = (1, 0)
    for index, (key, strength) in enumerate(loras):
        node_id = 20 + index
        nodes.append(Node(node_id, "WanAnimateLoraLoader", (380, 40 + 160 * index),
                          {"lora_name": MODELS[key][0], "strength": strength}, {"model": model_source},
                          models=(model(key),)))
        model_source = (node_id, 0)
    nodes += [
        Node(14, "WanAnimateSampler", (1520, 300),
             {"steps": steps, "shift": 5.0, "scheduler": "dpm++", "seed": 42, "cfg": 1.0, "segment_length": segment,
              "guide_frames": guide, "face_cfg": 1.0, "colour_correction": colour, "resume_dir": resume,
              **(sampler or {})},
             {"model": model_source, "vae": (2, 0), "embeds": (13, 0)}),
        Node(15, "CreateVideo", (1900, 300), {"fps": 30.0}, {"images": (14, 0), "fps": (9, 2)}),
        Node(16, "SaveVideo", (1900, 460), {"filename_prefix": f"wan_animate/{mode}", "format": "auto",
                                            "codec": "auto"}, {"video": (15, 0)}),
    ]
    if tpose:
        nodes += kontext_tpose_nodes()
    if colour:
        nodes.append(Node(17, "PreviewImage", (1900, 700), links={"images": (14, 1)}, title="Colour drift"))
    keys = [dit, "vae", "t5", "clip_vision", "detector", "pose", *(k for k, _ in loras),
            *(("kontext", "clip_l", "t5_flux", "flux_vae") if tpose else ())]
    nodes.append(Node(30, "MarkdownNote", (760, 0), {"text": note(keys, extra)}, title="Read me"))
    return nodes


def kontext_edit(first_id: int, image: tuple[int, int], prompt: str, y: int, title: str) -> list[Node]:
    """One FLUX.1 Kontext edit (ComfyUI core nodes): scale, encode as reference, sample 28 steps, decode."""
    scale, encode, text, reference, guidance, negative, sampler, decode = range(first_id, first_id + 8)
    x = -1200
    return [
        Node(scale, "FluxKontextImageScale", (x, y), links={"image": image}),
        Node(encode, "VAEEncode", (x + 340, y), links={"pixels": (scale, 0), "vae": (42, 0)}),
        Node(text, "CLIPTextEncode", (x, y + 120), {"text": prompt}, {"clip": (41, 0)}, title=title),
        Node(reference, "ReferenceLatent", (x + 340, y + 120), links={"conditioning": (text, 0),
                                                                     "latent": (encode, 0)}),
        Node(guidance, "FluxGuidance", (x + 340, y + 220), {"guidance": 2.5}, {"conditioning": (reference, 0)}),
        Node(negative, "ConditioningZeroOut", (x + 340, y + 320), links={"conditioning": (text, 0)}),
        Node(sampler, "KSampler", (x + 680, y), {"seed": 0, "steps": 28, "cfg": 1.0, "sampler_name": "euler",
                                                 "scheduler": "simple", "denoise": 1.0},
             {"model": (40, 0), "positive": (guidance, 0), "negative": (negative, 0), "latent_image": (encode, 0)}),
        Node(decode, "VAEDecode", (x + 1020, y), links={"samples": (sampler, 0), "vae": (42, 0)}),
    ]


def kontext_tpose_nodes() -> list[Node]:
    """Kontext models and the two T-pose edits: the character (node 57) and the driving video's first frame (67)."""
    return [
        Node(40, "UNETLoader", (-1200, -200), {"unet_name": MODELS["kontext"][0], "weight_dtype": "default"},
             models=(model("kontext"),)),
        Node(41, "DualCLIPLoader", (-1200, -60), {"clip_name1": MODELS["clip_l"][0], "clip_name2": MODELS["t5_flux"][0],
                                                  "type": "flux", "device": "default"},
             models=(model("clip_l"), model("t5_flux"))),
        Node(42, "VAELoader", (-840, -200), {"vae_name": MODELS["flux_vae"][0]}, models=(model("flux_vae"),)),
        *kontext_edit(50, (7, 0), ARMS_DOWN_PROMPT, 100, "Character edit prompt"),
        Node(59, "ImageFromBatch", (-1540, 560), {"batch_index": 0, "length": 1}, {"image": (9, 0)},
             title="Driving video's first frame"),
        *kontext_edit(60, (59, 0), TPOSE_PROMPT, 560, "Driving frame edit prompt"),
        Node(68, "PreviewImage", (-180, 100), links={"images": (57, 0)}, title="Character in T-pose"),
        Node(69, "PreviewImage", (-180, 560), links={"images": (67, 0)}, title="Driving frame in T-pose"),
    ]


WORKFLOWS = {
    "animate": graph("animate", extra="Animation: the character moves like the person in the driving video; the "
                                      "background comes from the character image. Load the image and the video, "
                                      "then Run. Offload 'auto' fits the model to your free VRAM."),
    "replace": graph("replace", loras=(("relight", 1.0),),
                     extra="Replacement: the character takes the place of the person in the video; background and "
                           "lighting come from the video. The relighting LoRA matches the character to the scene's "
                           "light. For a tighter mask use SAM2 (pip install sam2, models/sam2/sam2_hiera_large.pt)."),
    "long_video": graph("animate", guide="5", colour=True, resume="wan_animate_resume",
                        prompts=f"0: {PROMPT}\n144: 视频中的人在挥手",
                        sampler={"colour_anchor": "first", "colour_method": "mean_std_lab"},
                        extra="Long videos: any length; the sampler cuts the video into 77-frame segments, each "
                              "guided by the last 5 frames of the previous one, corrects colour drift against "
                              "the first segment (the chart shows each segment's drift), and keeps finished "
                              "segments in output/wan_animate_resume so a re-queued job resumes where it stopped. "
                              "The prompt schedule gives each segment the prompt of its first frame (here: from "
                              "frame 144 on, the person waves)."),
    "tpose_retarget": graph("animate", tpose=True,
                            extra="T-pose retargeting: FLUX.1 Kontext edits the character and the driving video's "
                                  "first frame into a standard pose (the official edit prompts: arms down for a "
                                  "portrait picture, a T-pose for a landscape one; edit them to suit), and "
                                  "Preprocess measures the bone lengths on both to fit the driving skeleton to the "
                                  "character. Check the two previews before a long run."),
    "low_vram": graph("animate", dit="fp8", loras=(("lightx2v", 1.0),), offload="30", steps=6, tiled_vae=True,
                      extra="Low VRAM: scaled-fp8 weights (half of bf16), 30 of 40 blocks streamed from host memory "
                            "while the GPU computes, a tiled VAE, and the step-distillation LoRA for 6 steps without CFG. Lower "
                            "the preprocess width x height (e.g. 832 x 480) on 8-12 GB cards."),
}
