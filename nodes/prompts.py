"""Prompt Schedule node: one prompt per stretch of the driving video, encoded with a ComfyUI CLIP."""
from __future__ import annotations

from wan_animate.pipeline.prompts import parse_prompt_schedule

from .checks import conditioning_tokens
from .types import PROMPTS, PromptSchedule

EXAMPLE = "0: the person walks in\n120: the person waves"


def encode_prompt(clip, text: str):
    """CLIPTextEncode's CONDITIONING for `text` ([[embeddings [1, L, D], {"pooled_output": ...}]])."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


class WanAnimatePromptSchedule:
    """Lines `<frame>: <prompt>`; each segment of the Sampler gets the prompt active at its first frame."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "the umT5 'wan' text encoder (CLIPLoader)"}),
                "prompts": ("STRING", {"multiline": True, "default": EXAMPLE,
                                       "tooltip": "one '<frame>: <prompt>' per line, frame numbers of the driving "
                                                  "video, starting at 0"}),
            },
        }

    RETURN_TYPES = (PROMPTS,)
    RETURN_NAMES = ("prompts",)
    FUNCTION = "encode"
    CATEGORY = "WanAnimate/generation"

    def encode(self, clip, prompts: str):
        schedule = parse_prompt_schedule(prompts)
        entries = tuple((frame, conditioning_tokens(encode_prompt(clip, text), f"prompts (frame {frame})"))
                        for frame, text in schedule)
        return (PromptSchedule(entries),)


NODE_CLASS_MAPPINGS = {"WanAnimatePromptSchedule": WanAnimatePromptSchedule}
NODE_DISPLAY_NAME_MAPPINGS = {"WanAnimatePromptSchedule": "Wan Animate Prompt Schedule"}
