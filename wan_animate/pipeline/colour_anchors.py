"""Colour correction of a long video against an anchor, so that corrections do not add up from segment to segment.

Anchors (what each segment's colours are matched to):
- previous: the previous segment's last frames, compared with this segment's guidance frames (chained);
- first: the first segment (or the start frames of a continuation), compared with the whole segment;
- reference: the reference image, compared with the whole segment;
- background (Replacement): the driving video's own pixels outside the person mask, compared with the same pixels
  of the segment: ground truth that the correction cannot wander from.
Methods: mean_std_rgb (per-channel mean and std in RGB; `match_colour`), mean_std_lab (the same in Lab), histogram
(per-channel quantile mapping). strength 0..1 blends between the segment as generated and fully corrected.
The drift (largest per-channel difference of mean colour against the anchor) is measured before and after.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .color import affine_match, match_colour, match_histogram, match_mean_std_lab, pixel_set, set_drift

COLOUR_ANCHORS = ("previous", "first", "reference", "background")
COLOUR_METHODS = ("mean_std_rgb", "mean_std_lab", "histogram")


def check_colour_settings(anchor: str, method: str, strength: float, mode: str) -> None:
    if anchor not in COLOUR_ANCHORS:
        raise ValueError(f"colour_anchor is {anchor!r}; expected one of {COLOUR_ANCHORS}")
    if method not in COLOUR_METHODS:
        raise ValueError(f"colour_method is {method!r}; expected one of {COLOUR_METHODS}")
    if not 0 <= strength <= 1:
        raise ValueError(f"colour_strength is {strength}; expected 0 to 1")
    if anchor == "background" and mode != "replace":
        raise ValueError("colour_anchor 'background' needs Replacement mode (the driving video's background outside "
                         "the mask); use 'first' or 'reference' in Animation mode")


@dataclass(frozen=True)
class SegmentDrift:
    """Drift of one segment against the anchor, before and after correction (mean colour, [-1, 1] units)."""

    index: int
    before: float
    after: float


class ColourAnchor:
    """Corrects segments one after another against the chosen anchor; `report` lists each segment's drift."""

    def __init__(self, anchor: str, method: str, strength: float, reference: torch.Tensor | None = None):
        self.anchor, self.method, self.strength = anchor, method, strength
        self.reference = reference  # [3, H, W] in [-1, 1], for the reference anchor
        self.first: torch.Tensor | None = None  # pixels [3, N] of the first segment, for the first anchor
        self.report: list[SegmentDrift] = []

    def remember_first(self, frames: torch.Tensor) -> None:
        """Frames [3, n, H, W] that the first anchor matches to, if none yet (the first segment or start frames)."""
        if self.first is None:
            self.first = pixel_set(frames)

    def correct(
        self,
        index: int,
        segment: torch.Tensor,
        guide_frames: int,
        previous_tail: torch.Tensor | None,
        background: torch.Tensor | None = None,
        person_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The segment [3, F, H, W] corrected against the anchor (unchanged when the anchor has nothing to offer yet:
        no previous segment, or the first segment itself). background [3, F, H, W] and person_mask [F, H, W] (1 =
        person) are the segment's driving frames, for the background anchor."""
        if self.anchor == "previous":
            if previous_tail is None:
                return segment
            head = segment[:, :guide_frames]
            if self.method == "mean_std_rgb" and self.strength == 1:  # the original chained correction
                corrected = match_colour(segment, head, previous_tail)
            else:
                corrected = self._transfer(segment, pixel_set(head), pixel_set(previous_tail))
            return self._record(index, pixel_set(head), pixel_set(previous_tail),
                                pixel_set(corrected[:, :guide_frames]), corrected)
        if self.anchor == "first":
            if self.first is None:
                self.remember_first(segment)
                return segment
            return self._whole(index, segment, self.first)
        if self.anchor == "reference":
            return self._whole(index, segment, pixel_set(self.reference))
        if background is None or person_mask is None:
            raise ValueError("colour_anchor 'background' needs the background video and the person mask")
        outside = person_mask < 0.5
        if not outside.any():
            return segment
        target = pixel_set(background, outside)
        source = pixel_set(segment, outside)
        corrected = self._transfer(segment, source, target)
        return self._record(index, source, target, pixel_set(corrected, outside), corrected)

    def _whole(self, index: int, segment: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        source = pixel_set(segment)
        corrected = self._transfer(segment, source, target)
        return self._record(index, source, target, pixel_set(corrected), corrected)

    def _transfer(self, segment: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.method == "mean_std_rgb":
            full = affine_match(segment.float(), source, target).clamp(-1, 1)
        elif self.method == "mean_std_lab":
            full = match_mean_std_lab(segment.float(), source, target)
        else:
            full = match_histogram(segment.float(), source, target)
        if self.strength != 1:
            full = segment.float() + self.strength * (full - segment.float())
        return full.to(segment.dtype)

    def _record(self, index: int, source: torch.Tensor, target: torch.Tensor, corrected_source: torch.Tensor,
                corrected: torch.Tensor) -> torch.Tensor:
        self.report.append(SegmentDrift(index, set_drift(source, target), set_drift(corrected_source, target)))
        return corrected
