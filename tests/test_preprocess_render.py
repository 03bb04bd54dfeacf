"""Skeleton drawing on hand-built skeletons: colours at joints and limbs, thresholds, stick widths, fitting."""
from __future__ import annotations

import numpy as np
import pytest

from wan_animate.preprocess.keypoints import BODY_SOURCE_A, BODY_SOURCE_B
from wan_animate.preprocess.render import (
    BODY_COLORS,
    HAND_JOINT_COLOR,
    body_stick_width,
    draw_skeleton,
    fit_with_padding,
    hand_stick_width,
    hsv_to_rgb,
    render_animate_poses,
    render_pose,
    render_replace_poses,
)

NO_HAND = np.zeros((21, 3))


def spread_body(size=(400, 600)) -> np.ndarray:
    """[20, 3] body whose joints sit on a grid, far enough apart that their discs do not overlap."""
    height, width = size
    body = np.zeros((20, 3))
    for index in range(20):
        body[index] = (40 + (index % 5) * (width - 80) / 4, 40 + (index // 5) * (height - 80) / 3, 1.0)
    return body


def test_each_body_joint_gets_its_colour():
    body = spread_body()
    picture = draw_skeleton((400, 600), body, NO_HAND, NO_HAND)
    for index, (x, y, _) in enumerate(body):
        assert tuple(picture[int(y), int(x)]) == BODY_COLORS[index], f"joint {index}"


def test_limbs_are_drawn_at_sixty_percent_of_their_colour():
    body = np.zeros((20, 3))
    body[1] = (100.0, 100.0, 1.0)  # neck
    body[2] = (300.0, 100.0, 1.0)  # right shoulder: limb 0, red
    picture = draw_skeleton((200, 400), body, NO_HAND, NO_HAND)
    assert tuple(picture[100, 200]) == (153, 0, 0)
    assert tuple(picture[100, 100]) == BODY_COLORS[1] and tuple(picture[100, 300]) == BODY_COLORS[2]
    assert picture[150].max() == 0  # nothing else


def test_hand_bones_follow_the_hue_circle_and_joints_are_blue():
    hand = np.zeros((21, 3))
    hand[0] = (50.0, 50.0, 1.0)
    hand[1] = (150.0, 50.0, 1.0)  # bone 0: hue 0 -> red
    hand[5] = (50.0, 150.0, 1.0)  # bone 4: hue 0.2 -> (204, 255, 0)
    picture = draw_skeleton((200, 200), np.zeros((20, 3)), hand, NO_HAND)
    assert tuple(picture[50, 100]) == (255, 0, 0)
    assert tuple(picture[100, 50]) == (204, 255, 0)
    for x, y in ((50, 50), (150, 50), (50, 150)):
        assert tuple(picture[y, x]) == HAND_JOINT_COLOR


def test_hsv_colours_match_the_matplotlib_formula():
    assert hsv_to_rgb(0.0) == (1.0, 0.0, 0.0)
    assert hsv_to_rgb(0.5) == (0.0, 1.0, 1.0)
    red, green, blue = hsv_to_rgb(0.05)
    assert red == 1.0 and blue == 0.0 and green == pytest.approx(0.3)


def test_points_under_the_threshold_and_nan_points_are_not_drawn():
    body = spread_body()
    body[:, 2] = 0.49
    hand = np.full((21, 3), np.nan)
    hand[:, 2] = 1.0
    assert draw_skeleton((400, 600), body, hand, hand).max() == 0
    all_zero_scores = np.zeros((133, 3), dtype=np.float32)
    assert render_pose(all_zero_scores, (64, 96)).max() == 0


@pytest.mark.parametrize("size, body, hand", [((352, 640), 1, 1), ((720, 1280), 2, 1), ((1080, 1920), 4, 2)])
def test_stick_widths_scale_with_the_short_side(size, body, hand):
    assert body_stick_width(size) == body and hand_stick_width(size) == hand


def test_wider_canvas_draws_thicker_limbs():
    body = np.zeros((20, 3))
    body[1] = (100.0, 100.0, 1.0)
    body[2] = (500.0, 100.0, 1.0)
    thin = draw_skeleton((400, 600), body, NO_HAND, NO_HAND)
    thick = draw_skeleton((1200, 600 * 3), body, NO_HAND, NO_HAND)
    assert (thin[:, 200].max(axis=-1) > 0).sum() < (thick[:, 200].max(axis=-1) > 0).sum()


def test_render_pose_maps_wholebody_points_to_the_20_point_body():
    keypoints = np.zeros((133, 3), dtype=np.float32)
    keypoints[5] = (60.0, 40.0, 0.9)   # left shoulder
    keypoints[6] = (20.0, 40.0, 0.9)   # right shoulder -> neck at their mean
    picture = render_pose(keypoints, (80, 80))
    assert BODY_SOURCE_A[1] == 6 and BODY_SOURCE_B[1] == 5
    assert tuple(picture[40, 40]) == BODY_COLORS[1]                # neck disc
    assert tuple(picture[40, 60]) == BODY_COLORS[5]                # left shoulder disc
    assert tuple(picture[40, 50]) == tuple(int(c * 0.6) for c in BODY_COLORS[1])  # neck -> left shoulder limb


def test_fit_with_padding_keeps_aspect_and_centres():
    image = np.full((100, 50, 3), 255, dtype=np.uint8)
    fitted = fit_with_padding(image, (60, 120))  # portrait into landscape: 30 px wide, 45 px of padding each side
    assert fitted.shape == (60, 120, 3)
    assert fitted[:, :45].max() == 0 and fitted[:, 75:].max() == 0 and fitted[:, 45:75].min() == 255
    fitted = fit_with_padding(np.full((50, 100, 3), 255, dtype=np.uint8), (100, 100))
    assert fitted[:25].max() == 0 and fitted[75:].max() == 0 and fitted[25:75].min() == 255


def test_video_renders_have_the_mode_sizes():
    keypoints = np.zeros((3, 133, 3), dtype=np.float32)
    keypoints[:, 5] = (30.0, 50.0, 0.9)
    keypoints[:, 6] = (10.0, 50.0, 0.9)
    assert render_replace_poses(keypoints, (96, 48)).shape == (3, 96, 48, 3)
    animate = render_animate_poses(keypoints, (96, 48), (64, 160))
    assert animate.shape == (3, 64, 160, 3)
    assert animate[:, :, :64].max() == 0 and animate[:, :, 96:].max() == 0  # 32 px wide picture, centred
    assert animate.max() > 0
