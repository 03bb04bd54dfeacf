"""Preprocess controls: the official mask shape settings for several values, the face box scale and steady face
boxes (the person to follow: test_preprocess_person.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from test_preprocess_face import keypoints_with_face
from wan_animate.preprocess import masks as M
from wan_animate.preprocess.face_crop import FACE_SCALE, detect_face_boxes, steady_face_boxes


def official_formula(mask: np.ndarray, iterations: int, k: int, w_len: int, h_len: int) -> np.ndarray:
    """The official Replacement mask (Wan2.2 get_mask_body_img then get_aug_mask), stated cell by cell: dilate
    with a k x k square of ones `iterations` times; in the dilated mask's box [x_min, x_max) x [y_min, y_max), pixel
    (x, y) lies in cell ((x - x_min) // int(box_w / w_len), (y - y_min) // int(box_h / h_len)); every cell that
    holds a mask pixel is filled."""
    dilated = cv2.dilate(mask, np.ones((k, k), np.uint8), iterations=iterations)
    ys, xs = np.nonzero(dilated)
    x_min, x_max, y_min, y_max = xs.min(), xs.max(), ys.min(), ys.max()
    step_x, step_y = int((x_max - x_min) / w_len), int((y_max - y_min) / h_len)
    grid_y, grid_x = np.mgrid[y_min:y_max, x_min:x_max]
    cells = ((grid_y - y_min) // step_y) * 100_000 + (grid_x - x_min) // step_x
    touched = np.unique(cells[dilated[y_min:y_max, x_min:x_max] > 0])
    out = dilated.copy()
    out[y_min:y_max, x_min:x_max][np.isin(cells, touched)] = 1
    return out


def person_blob(seed: int) -> np.ndarray:
    """A [96, 80] uint8 0/1 silhouette: a head, a body and an arm, plus noise pixels."""
    mask = np.zeros((96, 80), np.uint8)
    cv2.circle(mask, (40, 18), 9, 1, -1)
    cv2.rectangle(mask, (30, 28), (50, 70), 1, -1)
    cv2.line(mask, (50, 32), (70, 50 + seed), 1, 3)
    rng = np.random.default_rng(seed)
    mask[rng.integers(20, 80, 4), rng.integers(10, 70, 4)] = 1
    return mask


@pytest.mark.parametrize("iterations,k,w_len,h_len", [(3, 7, 1, 1), (1, 3, 4, 8), (2, 5, 10, 20), (3, 7, 6, 3),
                                                      (4, 3, 2, 12)])
def test_mask_shape_follows_the_official_formulas(iterations, k, w_len, h_len):
    masks = np.stack([person_blob(0), person_blob(5)])
    ours = M.official_mask_postprocess(masks, iterations, k, w_len, h_len)
    for mask, out in zip(masks, ours):
        assert np.array_equal(out, official_formula(mask, iterations, k, w_len, h_len))


def test_finer_blocks_follow_the_body_instead_of_a_rectangle():
    mask = person_blob(0)[None]
    box = M.official_mask_postprocess(mask, 3, 7, 1, 1)[0]
    fine = M.official_mask_postprocess(mask, 3, 7, 10, 20)[0]
    assert fine.sum() < 0.9 * box.sum() and np.all(fine <= box)


def test_mask_adjust_node_shapes_only_when_asked(pack):
    node = pack.NODE_CLASS_MAPPINGS["WanAnimateMaskAdjust"]()
    images = torch.rand(2, 96, 80, 3)
    mask = torch.from_numpy(np.stack([person_blob(0), person_blob(5)]).astype(np.float32))
    plain = node.adjust(images, mask, 0, 0.0)["result"][1]
    assert torch.equal(plain, mask)
    shaped = node.adjust(images, mask, 0, 0.0, mask_iterations=2, mask_kernel=5, mask_block_w=10,
                         mask_block_h=20)["result"][1]
    expected = M.official_mask_postprocess(mask.numpy() > 0.5, 2, 5, 10, 20)
    assert np.array_equal(shaped.numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("scale", [1.0, FACE_SCALE, 1.8, 2.5])
def test_face_box_area_is_scale_times_the_face(scale):
    keypoints = keypoints_with_face((200.0, 260.0), (200.0, 280.0))
    x1, x2, y1, y2 = detect_face_boxes(keypoints, (480, 640), scale).boxes[0]
    area = (x2 - x1) * (y2 - y1)
    expected = 60 * 80 * scale
    assert abs(area - expected) <= (x2 - x1) + (y2 - y1) + 1  # integer truncation of the edges
    grown_y = (y2 - y1) - 80
    assert abs((200 - y1) - 3 * (y2 - 280)) <= 4 and grown_y >= -1  # 3 parts above for 1 below (truncated)


def test_steady_boxes_keep_one_size_and_follow_the_face():
    boxes = np.array([[100, 160, 100, 180], [110, 180, 95, 190], [90, 146, 104, 170], [600, 660, 5, 85]])
    steady = steady_face_boxes(boxes, (480, 640))
    sizes = {(x2 - x1, y2 - y1) for x1, x2, y1, y2 in steady}
    assert len(sizes) == 1 and sizes.pop() == (int(np.median(boxes[:, 1] - boxes[:, 0])),
                                               int(np.median(boxes[:, 3] - boxes[:, 2])))
    centres = (steady[:3, 0] + steady[:3, 1]) / 2
    assert np.allclose(centres, (boxes[:3, 0] + boxes[:3, 1]) / 2, atol=1)
    assert steady[:, 0].min() >= 0 and steady[:, 1].max() <= 640 and steady[:, 2].min() >= 0  # shifted inside
