"""A line chart of the colour drift per segment, before and after correction, drawn with PIL (no plotting library)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .colour_anchors import SegmentDrift

WIDTH, HEIGHT = 640, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 36, 40
BEFORE, AFTER = (220, 70, 60), (40, 160, 80)
LEVELS = 127.5  # [-1, 1] units -> 0..255 colour levels


def drift_plot(report: Sequence[SegmentDrift], title: str) -> np.ndarray:
    """The chart as an RGB image [HEIGHT, WIDTH, 3] uint8: x = segment, y = drift in 0..255 colour levels."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN_LEFT, 10), title, fill=(20, 20, 20))
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    if not report:
        draw.text((left + 12, (top + bottom) // 2), "no segment was corrected (one segment, or correction off)",
                  fill=(90, 90, 90))
        return np.asarray(image)

    indices = [d.index for d in report]
    peak = max(max(d.before, d.after) for d in report) * LEVELS
    y_max = _nice_ceiling(peak)
    first, last = min(indices), max(indices)

    def x_at(index: int) -> float:
        return (left + right) / 2 if first == last else left + (index - first) * (right - left) / (last - first)

    def y_at(value: float) -> float:
        return bottom - value * LEVELS / y_max * (bottom - top)

    for k in range(5):  # horizontal grid with labels
        value = y_max * k / 4
        y = bottom - k * (bottom - top) / 4
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((6, y - 6), f"{value:.1f}", fill=(60, 60, 60))
    for index in indices:
        draw.text((x_at(index) - 4, bottom + 6), str(index), fill=(60, 60, 60))
    draw.text(((left + right) // 2 - 24, HEIGHT - 16), "segment", fill=(60, 60, 60))

    for colour, values in ((BEFORE, [d.before for d in report]), (AFTER, [d.after for d in report])):
        points = [(x_at(i), y_at(v)) for i, v in zip(indices, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    draw.text((right - 150, top + 6), "before correction", fill=BEFORE)
    draw.text((right - 150, top + 20), "after correction", fill=AFTER)
    return np.asarray(image)


def _nice_ceiling(value: float) -> float:
    """Smallest of 1, 2, 5 x 10^k at or above value (at least 1 colour level)."""
    value = max(value, 1.0)
    scale = 10 ** np.floor(np.log10(value))
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return float(step * scale)
    return float(10 * scale)
