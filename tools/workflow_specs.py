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
    "gguf": ("Wan2.2-Animate-14B-Q4_K_S.gguf", "diffusion_models",
             f"{HF}/QuantStack/Wan2.2-Animate-14B-GGUF/resolve/main/Wan2.2-Animate-14B-Q4_K_S.gguf"),
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
    "lightx2v": ("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras",
                 f"{HF}/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                 "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"),
    "kontext": ("flux1-dev-kontext_fp8_scaled.safetensors", "diffusion_models",
                f"{HF}/Comfy-Org/flux1-kontext-dev_ComfyUI/resolve/main/split_files/diffusion_models/"
                "flux1-dev-kontext_fp8_scaled.safetensors"),
    "clip_l": ("clip_l.safetensors", "text_encoders",
               f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "t5_flux": ("t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors"),
    "flux_vae": ("ae.safetensors", "vae",
                 f"{HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"),
}
PROMPT = "视频中的人在做动作"
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
          prompts: str | None = None, sampler: dict | None = None) -> list[Node]:
    """One complete graph: models, text/CLIP encoders, preprocessing, embeds, sampler, video out.

    prompts: `<frame>: <prompt>` lines for a Prompt Schedule in place of the single prompt.
    sampler: further Sampler widgets (its optional controls).
    """
    nodes = [
        Node(1, "WanAnimateModelLoader", (0, 0), {"model_name": MODELS[dit][0], "compute_dtype": "bf16",
                                                  "weight_storage": storage, "attention": "sdpa",
                                                  "offload_blocks": offload, "prefetch_blocks": 1,
                                                  "compile": False, "fp8_matmul": False}, models=(model(dit),)),
        Node(2, "WanAnimateVAELoader", (0, 300), {"vae_name": MODELS["vae"][0], "dtype": "fp32", "tiled": tiled_vae,
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
             {"mode": mode, "width": 1280, "height": 720, "retarget": False, "smoothing": 0.0,
              "mask_method": "pose_box", "mask_grow": 0, "mask_blur": 0.0, "fps": 30.0},
             {"pose_models": (10, 0), "character_image": (7, 0), "driving_video": (9, 0), "video_fps": (9, 2),
              "audio": (9, 1)}),
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
              "cache_threshold": 0.0, **(sampler or {})},
             {"model": model_source, "vae": (2, 0), "embeds": (13, 0)}),
        Node(15, "CreateVideo", (1900, 300), {"fps": 30.0}, {"images": (14, 0), "fps": (11, 7), "audio": (11, 8)}),
        Node(16, "SaveVideo", (1900, 460), {"filename_prefix": f"wan_animate/{mode}", "format": "auto",
                                            "codec": "auto"}, {"video": (15, 0)}),
    ]
    if colour:
        nodes.append(Node(17, "PreviewImage", (1900, 700), links={"images": (14, 1)}, title="Colour drift"))
    keys = [dit, "vae", "t5", "clip_vision", "detector", "pose", *(k for k, _ in loras)]
    nodes.append(Node(30, "MarkdownNote", (760, 0), {"text": note(keys, extra)}, title="Read me"))
    return nodes



# The official `use_flux` edit prompts (Wan2.2 preprocess `get_editing_prompts`): chosen per image from whether the
# driving video shows the legs / the arms confidently, and whether the image is wider than tall.
TPOSE_PROMPTS = {
    "full body, landscape": "Change the person to a standard T-pose (facing forward with arms extended). The person "
                            "is standing. Feet and Hands are visible in the image.",
    "full body, portrait": "Change the person to a standard pose with the face oriented forward and arms extending "
                           "straight down by the sides. The person is standing. Feet and Hands are visible in the "
                           "image.",
    "arms only, landscape": "Change the person to a standard T-pose (facing forward with arms extended). Hands are "
                            "visible in the image.",
    "arms only, portrait": "Change the person to a standard pose with the face oriented forward and arms extending "
                           "straight down by the sides. Hands are visible in the image.",
    "neither": "Change the person to face forward.",
}
KONTEXT_STEPS, KONTEXT_GUIDANCE = 28, 2.5  # the official FluxKontextPipeline call


def kontext_edit(first_id: int, image: tuple[int, int], prompt: str, y: int, title: str) -> list[Node]:
    """FLUX.1 Kontext edit of one image with ComfyUI core nodes (its Kontext template's graph): the image scaled to
    a Kontext resolution and encoded is both the reference latent and the starting latent. Ids first_id..+8: the
    decoded edit at first_id + 7, its preview at + 8; the models come from nodes 40 (UNETLoader), 41 (DualCLIPLoader)
    and 42 (VAELoader)."""
    i = first_id
    return [
        Node(i, "FluxKontextImageScale", (380, y), links={"image": image}),
        Node(i + 1, "VAEEncode", (760, y), links={"pixels": (i, 0), "vae": (42, 0)}),
        Node(i + 2, "CLIPTextEncode", (380, y + 120), {"text": prompt}, {"clip": (41, 0)}, title=f"{title} prompt"),
        Node(i + 3, "ReferenceLatent", (760, y + 120), links={"conditioning": (i + 2, 0), "latent": (i + 1, 0)}),
        Node(i + 4, "FluxGuidance", (1140, y + 120), {"guidance": KONTEXT_GUIDANCE}, {"conditioning": (i + 3, 0)}),
        Node(i + 5, "ConditioningZeroOut", (1140, y + 260), links={"conditioning": (i + 2, 0)}),
        Node(i + 6, "KSampler", (1520, y), {"seed": 42, "steps": KONTEXT_STEPS, "cfg": 1.0, "sampler_name": "euler",
                                            "scheduler": "simple", "denoise": 1.0},
             {"model": (40, 0), "positive": (i + 4, 0), "negative": (i + 5, 0), "latent_image": (i + 1, 0)},
             title=f"{title} (Kontext)"),
        Node(i + 7, "VAEDecode", (1900, y), links={"samples": (i + 6, 0), "vae": (42, 0)}),
        Node(i + 8, "PreviewImage", (1900, y + 120), links={"images": (i + 7, 0)}, title=f"{title}: check the pose"),
    ]


def tpose_kontext_graph() -> list[Node]:
    """Animation with T-pose retargeting: the character image and the driving video's first frame are edited into
    a T-pose with FLUX.1 Kontext (the official `use_flux` path), and the Preprocess node measures bone lengths on
    the edits (`tpose_character`, `tpose_driving`)."""
    prompts = "\n".join(f"- {case}: `{text}`" for case, text in TPOSE_PROMPTS.items())
    extra = (
        "T-pose retargeting: the driving skeleton is adapted to the character's proportions. As the official "
        "`use_flux` preprocessing does, FLUX.1 Kontext first edits the character image and the driving video's "
        "first frame into a standard pose (28 steps, guidance 2.5); the bone lengths are measured on the edits. "
        "Check both edits in the previews: Kontext may change the person or miss the pose; then change the seed "
        "or the prompt.\n\nThe official prompt of each image depends on the driving video (legs and arms "
        "visible, or arms only, or neither) and on the image's shape (wider than tall, or not):\n" + prompts +
        "\n\nBoth prompt nodes here hold the full-body, landscape one (the official example inputs' case).")
    nodes = graph("animate")
    preprocess = next(n for n in nodes if n.id == 11)
    preprocess.widgets["retarget"] = True
    preprocess.links.update({"tpose_character": (50, 0), "tpose_driving": (60, 0)})
    readme = next(n for n in nodes if n.id == 30)
    readme.widgets["text"] = note(["bf16", "vae", "t5", "clip_vision", "detector", "pose", "kontext", "clip_l",
                                   "t5_flux", "flux_vae"], extra)
    y = 1750
    prompt = TPOSE_PROMPTS["full body, landscape"]
    nodes += [
        Node(40, "UNETLoader", (0, y), {"unet_name": MODELS["kontext"][0], "weight_dtype": "default"},
             models=(model("kontext"),)),
        Node(41, "DualCLIPLoader", (0, y + 160), {"clip_name1": MODELS["clip_l"][0], "clip_name2": MODELS["t5_flux"][0],
                                                  "type": "flux", "device": "default"},
             models=(model("clip_l"), model("t5_flux"))),
        Node(42, "VAELoader", (0, y + 360), {"vae_name": MODELS["flux_vae"][0]}, models=(model("flux_vae"),)),
        *kontext_edit(43, (7, 0), prompt, y, "Character T-pose"),
        Node(52, "ImageFromBatch", (0, y + 800), {"batch_index": 0, "length": 1}, {"image": (9, 0)},
             title="Driving video's first frame"),
        *kontext_edit(53, (52, 0), prompt, y + 800, "Driving T-pose"),
    ]
    return nodes


WORKFLOWS = {
    "animate": graph("animate", extra="Animation: the character moves like the person in the driving video; the "
                                      "background comes from the character image. Load the image and the video, "
                                      "then Run. Offload 'auto' fits the model to your free VRAM."),
    "replace": graph("replace", loras=(("relight", 1.0),),
                     extra="Replacement: the character takes the place of the person in the video; background and "
                           "lighting come from the video. The relighting LoRA matches the character to the scene's "
                           "light. For a tighter mask use SAM2 (install it as the README says, keeping your torch; "
                           "models/sam2/sam2_hiera_large.pt)."),
    "long_video": graph("animate", guide="5", colour=True, resume="wan_animate_resume",
                        prompts=f"0: {PROMPT}\n144: 视频中的人在挥手",
                        sampler={"colour_anchor": "first", "colour_method": "mean_std_lab"},
                        extra="Long videos: any length; the sampler cuts the video into 77-frame segments, each "
                              "guided by the last 5 frames of the previous one, corrects colour drift against "
                              "the first segment (the chart shows each segment's drift), and keeps finished "
                              "segments in output/wan_animate_resume so a re-queued job resumes where it stopped. "
                              "The prompt schedule gives each segment the prompt of its first frame (here: from "
                              "frame 144 on, the person waves)."),
    "low_vram": graph("animate", dit="fp8", loras=(("lightx2v", 1.0),), offload="30", steps=6, tiled_vae=True,
                      extra="Low VRAM: scaled-fp8 weights (half of bf16), 30 of 40 blocks streamed from host memory "
                            "while the GPU computes, a tiled VAE, and the step-distillation LoRA for 6 steps without CFG. Lower "
                            "the preprocess width x height (e.g. 832 x 480) on 8-12 GB cards."),
    "low_vram_gguf": graph("animate", dit="gguf", loras=(("lightx2v", 1.0),), offload="auto", steps=6,
                           tiled_vae=True,
                           extra="Low VRAM and small RAM: a GGUF quantisation of the model (Q4_K_S, about 11 GB; Q3_K "
                                 "to Q8_0 files load the same way from models/diffusion_models or models/unet). Its "
                                 "weights stay quantised on the GPU and in host memory and are dequantised layer by "
                                 "layer; 'auto' streams as many quantised blocks from host memory as the card needs. "
                                 "The step-distillation LoRA, added in float at dequantisation, gives 6 steps "
                                 "without CFG. Lower the preprocess width x height (e.g. 832 x 480) on 8 GB cards."),
    "tpose_kontext": tpose_kontext_graph(),
}

