"""Prompts per segment: a schedule of `frame: text` lines, and which prompt a segment gets.

Frame numbers count the frames of the driving video from 0. A segment gets the prompt whose frame is the latest at or
before the segment's first frame; the schedule must start at frame 0 so that every segment has one.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch

_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$")


def parse_prompt_schedule(text: str) -> list[tuple[int, str]]:
    """`0: walks in` / `120: waves` lines -> [(0, "walks in"), (120, "waves")], sorted by frame.

    Blank lines are skipped; any other line must be `<frame>: <prompt>`, frames distinct, the first one 0.
    """
    schedule: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"prompt line {number} is {line.strip()!r}; expected '<frame>: <prompt>', e.g. "
                             "'0: a person walks in'")
        frame, prompt = int(match.group(1)), match.group(2)
        if frame in schedule:
            raise ValueError(f"prompt line {number}: frame {frame} already has a prompt")
        schedule[frame] = prompt
    if not schedule:
        raise ValueError("the prompt schedule is empty; expected lines like '0: a person walks in'")
    if 0 not in schedule:
        raise ValueError(f"the prompt schedule starts at frame {min(schedule)}; the first line must be for frame 0")
    return sorted(schedule.items())


def prompt_index(frames: Sequence[int], frame: int) -> int:
    """Index of the prompt active at `frame`: the last of the ascending `frames` that is <= frame."""
    active = [k for k, start in enumerate(frames) if start <= frame]
    if not active:
        raise ValueError(f"no prompt is active at frame {frame}; the schedule starts at frame {frames[0]}")
    return active[-1]


def context_at(
    context: torch.Tensor, schedule: Sequence[tuple[int, torch.Tensor]] | None, frame: int
) -> torch.Tensor:
    """The text embeddings for a segment starting at driving frame `frame`: `context` when there is no schedule."""
    if not schedule:
        return context
    return schedule[prompt_index([start for start, _ in schedule], frame)][1]
