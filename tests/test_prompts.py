"""Prompts per segment: parsing the schedule, encoding it with a CLIP, and which prompt each segment gets."""
from __future__ import annotations

import pytest
import torch

from helpers_dit import build_tiny_dit
from test_pipeline_generate import CONFIG, make_inputs, settings
from test_strengths import tiny_vae
from wan_animate.pipeline.generate import generate
from wan_animate.pipeline.prompts import context_at, parse_prompt_schedule, prompt_index


class FakeCLIP:
    """Tokenizes to character codes and encodes each prompt to embeddings [1, len, width] derived from its text."""

    def __init__(self, width: int = 4096, scheduled: bool = True):
        self.width = width
        if not scheduled:
            self.encode_from_tokens_scheduled = None
            del self.encode_from_tokens_scheduled

    def tokenize(self, text):
        return {"umt5xxl": [[(ord(c), 1.0) for c in text]]}

    def _embed(self, tokens):
        codes = torch.tensor([c for c, _ in tokens["umt5xxl"][0]], dtype=torch.float32)
        return codes[None, :, None] * torch.linspace(0, 1, self.width)[None, None]

    def encode_from_tokens_scheduled(self, tokens):
        return [[self._embed(tokens), {"pooled_output": None}]]

    def encode_from_tokens(self, tokens, return_pooled=False):
        return (self._embed(tokens), None) if return_pooled else self._embed(tokens)


def test_parse_sorts_and_trims():
    text = "\n120: waves goodbye \n0:walks in\n\n  60 :  turns  \n"
    assert parse_prompt_schedule(text) == [(0, "walks in"), (60, "turns"), (120, "waves goodbye")]


@pytest.mark.parametrize("text,message", [
    ("walks in", "line 1"), ("0: a\n0: b", "frame 0 already"), ("10: late", "frame 0"), ("  \n", "empty"),
    ("0: a\n-5: b", "line 2"),
])
def test_bad_schedules_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt_schedule(text)


def test_prompt_active_at_a_frame():
    frames = [0, 60, 120]
    assert [prompt_index(frames, f) for f in (0, 59, 60, 119, 120, 500)] == [0, 0, 1, 1, 2, 2]
    base, a, b = torch.zeros(1, 2), torch.ones(1, 2), torch.full((1, 2), 2.0)
    assert context_at(base, None, 70) is base
    assert context_at(base, [(0, a), (60, b)], 70) is b and context_at(base, [(0, a), (60, b)], 59) is a


@pytest.mark.parametrize("scheduled", [True, False])
def test_node_encodes_like_clip_text_encode(pack, scheduled):
    clip = FakeCLIP(scheduled=scheduled)
    (schedule,) = pack.NODE_CLASS_MAPPINGS["WanAnimatePromptSchedule"]().encode(clip, "0: ab\n8: xyz")
    assert [frame for frame, _ in schedule.entries] == [0, 8]
    assert torch.equal(schedule.entries[0][1], clip._embed(clip.tokenize("ab"))[0])
    assert schedule.entries[1][1].shape == (3, 4096)


def embeds_inputs(positive) -> dict:
    frames = 9
    return dict(mode="animate", positive=positive,
                clip_vision_output={"penultimate_hidden_states": torch.zeros(1, 257, 1280)},
                reference=torch.rand(1, 32, 48, 3), pose_video=torch.rand(frames, 32, 48, 3),
                face_video=torch.rand(frames, 512, 512, 3))


def test_one_prompt_is_the_simple_case(pack):
    clip = FakeCLIP()
    embeds_node = pack.NODE_CLASS_MAPPINGS["WanAnimateEmbeds"]()
    (schedule,) = pack.NODE_CLASS_MAPPINGS["WanAnimatePromptSchedule"]().encode(clip, "0: walks")
    (from_schedule,) = embeds_node.build(**embeds_inputs(schedule))
    (from_conditioning,) = embeds_node.build(**embeds_inputs(clip.encode_from_tokens_scheduled(clip.tokenize("walks"))))
    assert from_schedule.inputs.prompt_schedule is None and from_conditioning.inputs.prompt_schedule is None
    assert torch.equal(from_schedule.inputs.context, from_conditioning.inputs.context)

    (two,) = pack.NODE_CLASS_MAPPINGS["WanAnimatePromptSchedule"]().encode(clip, "0: walks\n4: runs")
    (embeds,) = embeds_node.build(**embeds_inputs(two))
    assert [f for f, _ in embeds.inputs.prompt_schedule] == [0, 4]
    assert torch.equal(embeds.inputs.context, two.entries[0][1])


class ContextRecorder:
    """Wraps a DiT, recording the first value of the text context of every call."""

    def __init__(self, dit):
        self.dit, self.contexts = dit, []

    def encode_face(self, face):
        return self.dit.encode_face(face)

    def __call__(self, x, t, context, *rest, **kwargs):
        self.contexts.append(context[0, 0].item())
        return self.dit(x, t, context, *rest, **kwargs)


def test_each_segment_gets_the_prompt_at_its_first_frame():
    dit = build_tiny_dit(seed=0, config=CONFIG)
    inputs = make_inputs(13)  # segments of 5 frames, 1 guide frame: they start at frames 0, 4, 8
    prompt = {k: torch.full((3, CONFIG.text_dim), float(k)) for k in (1, 2, 3)}
    inputs.prompt_schedule = [(0, prompt[1]), (4, prompt[2]), (7, prompt[3])]
    recorder = ContextRecorder(dit)
    generate(recorder, tiny_vae(), inputs, settings(steps=2))
    assert recorder.contexts == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]  # 2 steps per segment; the third starts at frame 8
