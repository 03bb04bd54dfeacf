"""Colour correction against anchors: a synthetic drift that grows per segment stays bounded when anchored, while the
chained correction adds up the error of each segment's regenerated guide frames; methods, strength, the chart."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_animate.pipeline.color import lab_to_rgb, match_colour, pixel_set, rgb_to_lab, set_drift
from wan_animate.pipeline.colour_anchors import ColourAnchor, SegmentDrift, check_colour_settings
from wan_animate.pipeline.drift_plot import HEIGHT, WIDTH, drift_plot

FRAMES, GUIDE, SEGMENTS = 9, 1, 6
DRIFT_PER_SEGMENT = 0.08  # every segment comes out brighter than the last
GUIDE_ERROR = 0.03  # the regenerated guide frames are brighter still than the rest of their segment
SIZE = 24


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A static scene [3, H, W] in [-0.6, 0.6] and a person mask [H, W] (1 = person)."""
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(SIZE, SIZE),
                                            mode="bilinear", align_corners=False)[0] * 1.2 - 0.6
    mask = torch.zeros(SIZE, SIZE)
    mask[6:18, 8:16] = 1
    return image, mask


def truth_segment(image: torch.Tensor, k: int) -> torch.Tensor:
    """What segment k should look like: the scene with a little frame noise [3, F, H, W]."""
    g = torch.Generator().manual_seed(100 + k)
    return image[:, None] + 0.01 * torch.randn(3, FRAMES, SIZE, SIZE, generator=g)


def run_chain(anchor: str, method: str) -> list[float]:
    """Correct SEGMENTS drifting segments in order; the error of each corrected segment against the truth."""
    image, mask = scene()
    corrector = ColourAnchor(anchor, method, 1.0, reference=image)
    errors, tail = [], None
    for k in range(SEGMENTS):
        truth = truth_segment(image, k)
        generated = truth + DRIFT_PER_SEGMENT * k
        if k > 0:
            generated[:, :GUIDE] += GUIDE_ERROR
        background = image[:, None].expand(3, FRAMES, SIZE, SIZE)
        corrected = corrector.correct(k, generated, GUIDE if k else 0, tail, background,
                                      mask.expand(FRAMES, SIZE, SIZE))
        errors.append(set_drift(pixel_set(corrected[:, GUIDE:]), pixel_set(truth[:, GUIDE:])))
        tail = corrected[:, -GUIDE:]
    return errors


@pytest.mark.parametrize("anchor", ["first", "reference", "background"])
@pytest.mark.parametrize("method", ["mean_std_rgb", "mean_std_lab", "histogram"])
def test_anchored_correction_stays_bounded_where_the_chain_grows(anchor, method):
    chained = run_chain("previous", method)
    anchored = run_chain(anchor, method)
    assert chained[-1] > 0.8 * GUIDE_ERROR * (SEGMENTS - 1)  # each segment adds its guide frames' error
    assert chained[-1] > 2 * chained[2]
    assert max(anchored) < 0.02, anchored
    uncorrected = DRIFT_PER_SEGMENT * (SEGMENTS - 1)
    assert anchored[-1] < 0.05 * uncorrected


def test_default_is_the_original_chained_correction():
    g = torch.Generator().manual_seed(1)
    segment, tail = torch.rand(3, 5, 8, 8, generator=g) - 0.5, torch.rand(3, 1, 8, 8, generator=g) * 0.6 - 0.1
    corrector = ColourAnchor("previous", "mean_std_rgb", 1.0)
    assert torch.equal(corrector.correct(1, segment, 1, tail), match_colour(segment, segment[:, :1], tail))
    assert corrector.correct(0, segment, 0, None) is segment
    assert len(corrector.report) == 1 and corrector.report[0].after < 1e-5 < corrector.report[0].before


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_strength_blends_towards_the_correction(strength):
    image, _ = scene()
    generated = truth_segment(image, 0) + 0.2
    full = ColourAnchor("reference", "mean_std_lab", 1.0, reference=image).correct(0, generated, 0, None)
    partial = ColourAnchor("reference", "mean_std_lab", strength, reference=image).correct(0, generated, 0, None)
    torch.testing.assert_close(partial, generated + strength * (full - generated), rtol=0, atol=1e-6)


def test_lab_round_trip_and_known_values():
    g = torch.Generator().manual_seed(2)
    rgb = torch.rand(3, 4, 5, generator=g) * 2 - 1
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, rtol=0, atol=1e-5)
    white, red = torch.ones(3, 1), torch.tensor([[1.0], [-1.0], [-1.0]])
    torch.testing.assert_close(rgb_to_lab(white)[:, 0].float(), torch.tensor([100.0, 0.0, 0.0]), rtol=0, atol=1e-2)
    torch.testing.assert_close(rgb_to_lab(red)[:, 0].float(), torch.tensor([53.24, 80.09, 67.20]), rtol=0, atol=0.05)


@pytest.mark.parametrize("anchor,method,strength,mode,message", [
    ("last", "mean_std_rgb", 1.0, "animate", "colour_anchor"), ("first", "curves", 1.0, "animate", "colour_method"),
    ("first", "histogram", 1.5, "animate", "colour_strength"),
    ("background", "histogram", 1.0, "animate", "Replacement"),
])
def test_bad_colour_settings_are_named(anchor, method, strength, mode, message):
    with pytest.raises(ValueError, match=message):
        check_colour_settings(anchor, method, strength, mode)


def test_drift_chart_draws_both_lines():
    report = [SegmentDrift(k, 0.02 * k, 0.002) for k in range(1, 6)]
    chart = drift_plot(report, "colour drift")
    assert chart.shape == (HEIGHT, WIDTH, 3) and chart.dtype == np.uint8
    reds = (chart[..., 0] > 200) & (chart[..., 1] < 100)
    greens = (chart[..., 1] > 140) & (chart[..., 0] < 80)
    assert reds.sum() > 100 and greens.sum() > 100
    rows_red, rows_green = np.nonzero(reds)[0], np.nonzero(greens)[0]
    assert rows_red.min() < rows_green.min()  # the rising 'before' line reaches higher than the flat 'after' one
    assert drift_plot([], "colour drift").shape == (HEIGHT, WIDTH, 3)


def test_generate_reports_each_corrected_segment():
    from helpers_dit import build_tiny_dit
    from test_pipeline_generate import CONFIG, DriftingVAE, make_inputs, settings
    from test_strengths import tiny_vae
    from wan_animate.pipeline.generate import generate

    dit, vae = build_tiny_dit(seed=0, config=CONFIG), tiny_vae()
    report: list = []
    job = settings(mode="replace", colour_correction=True, colour_anchor="background", colour_method="histogram")
    generate(dit, DriftingVAE(vae), make_inputs(13, "replace"), job, colour_report=report)
    assert [d.index for d in report] == [0, 1, 2]
    assert all(d.after < d.before for d in report) and report[-1].before > report[0].before
