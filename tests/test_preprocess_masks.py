"""Mask maths (official dilation + blockify, grow/shrink/blur, keypoint boxes, background) and SAM2 prompting."""
import importlib.util
import sys
import types

import numpy as np
import pytest

from wan_animate.preprocess import masks as M


def test_official_dilation_grows_a_pixel_to_19_by_19():
    mask = np.zeros((40, 40), np.uint8)
    mask[20, 20] = 1
    out = M.dilate_mask(mask)  # 7x7 ones, 3 iterations: 3 px per side per iteration
    ys, xs = np.nonzero(out)
    assert out.sum() == 19 * 19 and (ys.min(), ys.max(), xs.min(), xs.max()) == (11, 29, 11, 29)


def test_blockify_whole_box_excludes_the_last_row_and_column_like_the_official_code():
    mask = np.zeros((60, 100), np.uint8)
    mask[10, 10] = mask[50, 80] = 1
    out = M.blockify_mask(mask)
    assert out[10:50, 10:80].all()
    assert out.sum() == 40 * 70 + 1  # the cell stops before x_max / y_max; the pixel there is kept as it was


def test_blockify_grid_fills_only_cells_touching_the_mask():
    mask = np.zeros((60, 100), np.uint8)
    mask[10, 10] = mask[50, 80] = 1
    mask[35, 60] = 1
    out = M.blockify_mask(mask, w_len=2, h_len=2)  # box 70 x 40 -> cells 35 x 20
    assert out[10:30, 10:45].all() and out[30:50, 45:80].all()
    assert not out[10:30, 45:80].any() and not out[30:50, 10:45].any()
    assert out.sum() == 2 * 35 * 20 + 1
    assert np.array_equal(M.blockify_mask(np.zeros((5, 5), np.uint8)), np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="w_len"):
        M.blockify_mask(mask, w_len=0)


def test_official_postprocess_dilates_then_blockifies_and_skips_both_at_zero_iterations():
    masks = np.zeros((2, 60, 60), np.uint8)
    masks[0, 20, 20] = masks[0, 40, 30] = 1
    out = M.official_mask_postprocess(masks)
    assert out[0, 11:49, 11:39].all()  # dilated extent 11..49 x 11..39, filled box without its last row/column
    assert not out[1].any()
    assert np.array_equal(M.official_mask_postprocess(masks, iterations=0), masks)


def test_grow_and_shrink_by_pixels():
    mask = np.zeros((50, 50), np.float32)
    mask[15:35, 15:35] = 1
    grown = M.grow_mask(mask, 3)
    shrunk = M.grow_mask(mask, -3)
    assert grown[25].sum() == 26 and grown[:, 25].sum() == 26
    assert shrunk[25].sum() == 14 and shrunk.sum() == 14 * 14
    assert grown[12, 12] == 0  # round kernel: corners are not squared off
    boolean = M.grow_mask(mask.astype(bool)[None], 2)
    assert boolean.dtype == bool and boolean.shape == (1, 50, 50) and boolean[0, 25].sum() == 24
    assert np.array_equal(M.grow_mask(mask, 0), mask)


def test_blur_softens_edges_only():
    mask = np.zeros((1, 60, 60), np.uint8)
    mask[0, 10:50, 10:50] = 255
    soft = M.blur_mask(mask, 6)
    assert soft.dtype == np.float32 and soft.shape == (1, 60, 60)
    assert soft[0, 30, 30] == pytest.approx(1.0) and soft[0, 0, 0] == pytest.approx(0.0)
    assert 0.5 < soft[0, 30, 10] < 0.65 and 0.35 < soft[0, 30, 9] < 0.5  # the edge is about half covered
    assert abs(soft.sum() - 40 * 40) < 1.0  # blurring moves mass, it does not add any
    assert np.array_equal(M.blur_mask(mask[0], 0), mask[0] / 255.0)


def test_box_masks_from_keypoints_fill_missing_frames_from_the_nearest():
    keypoints = np.zeros((3, 133, 3), np.float32)
    keypoints[0, :2] = [[10, 20, 0.9], [50, 80, 0.9]]
    keypoints[0, 2] = [200, 200, 0.1]  # low score: ignored
    keypoints[2, :2] = [[0, 0, 0.9], [20, 10, 0.9]]
    masks = M.box_person_masks(keypoints, (100, 120), margin=0.0)
    ys, xs = np.nonzero(masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 80, 10, 50)
    assert np.array_equal(masks[1], masks[0])  # frame 1 has nothing: nearest earlier frame (tie -> earlier)
    padded = M.box_person_masks(keypoints[:1], (100, 120), margin=0.25)
    ys, xs = np.nonzero(padded[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 95, 0, 60)
    with pytest.raises(ValueError, match="no keypoint scores"):
        M.box_person_masks(np.zeros((2, 133, 3)), (10, 10))


def test_replacement_inputs_zero_the_person():
    frames = np.full((2, 4, 4, 3), 200, np.uint8)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2] = 255
    masks[1] = 128
    background, mask = M.replacement_inputs(frames, masks)
    assert background.dtype == np.uint8 and mask.dtype == np.float32
    assert (background[0, :2] == 0).all() and (background[0, 2:] == 200).all()
    assert (background[1] == 100).all() and mask[1, 0, 0] == pytest.approx(128 / 255)
    binary = np.zeros((2, 4, 4), np.uint8)
    binary[:, 0, 0] = 1  # the official 0/1 masks
    background, mask = M.replacement_inputs(frames, binary)
    assert background[0, 0, 0].tolist() == [0, 0, 0] and mask.max() == 1.0
    with pytest.raises(ValueError, match="match the frames"):
        M.replacement_inputs(frames, masks[:, :2])


def test_sam2_chunks_and_key_frames_follow_the_official_schedule():
    assert M.sam2_chunks(1000) == [(0, 400), (400, 800), (800, 1000)]
    assert M.sam2_chunks(400) == [(0, 400)]
    assert M.sam2_chunks(30) == [(0, 30)]
    assert M.sam2_key_frames(400) == [0, 100, 200, 300]
    assert M.sam2_key_frames(9) == [0, 2, 4, 6, 8]
    assert M.sam2_key_frames(7) == list(range(7))  # 7 // 4 = 1
    assert M.sam2_key_frames(4) == [0] and M.sam2_key_frames(1) == [0]


def body_keypoints(frames=2):
    keypoints = np.zeros((frames, 133, 3), np.float32)
    coco = {0: (100.7, 50.2), 5: (80, 90), 6: (121, 90), 11: (85, 160), 12: (115, 160), 15: (84, 250.9),
            16: (117, 251)}
    for index, (x, y) in coco.items():
        keypoints[:, index] = [x, y, 0.9]
    return keypoints


def test_sam2_prompt_points_are_nose_neck_shoulders_hips_ankles_in_pixels():
    points = M.sam2_prompt_points(body_keypoints(), (300, 200))
    assert points.dtype == np.int32 and points.shape == (2, 8, 2)
    # nose, neck (mean of the shoulders), right shoulder, left shoulder, right hip, left hip, right/left ankle;
    # truncated after the official float32 round trip x / W * W (115 / 200 * 200 = 114.99999 -> 114)
    assert points[0].tolist() == [[100, 50], [100, 90], [121, 90], [80, 90], [114, 160], [85, 160], [116, 250],
                                  [83, 250]]


def test_sam2_prompts_reuse_the_previous_body_when_a_frame_has_none():
    keypoints = body_keypoints(3)
    keypoints[1, :, :2] = -1.0  # the decoder's "nothing found" marker everywhere
    points = M.sam2_prompt_points(keypoints, (300, 200))
    assert np.array_equal(points[1], points[0])
    prompts = M.sam2_prompts(keypoints, (300, 200), chunk_frames=2)
    assert [(s, e, [k for k, _ in p]) for s, e, p in prompts] == [(0, 2, [0]), (2, 3, [0])]
    assert np.array_equal(prompts[1][2][0][1], points[2])


def test_missing_sam2_says_how_to_install(monkeypatch):
    if importlib.util.find_spec("sam2") is not None:
        pytest.skip("sam2 is installed here")
    with pytest.raises(ImportError, match="pip install --no-deps --no-build-isolation sam2"):
        M.sam2_person_masks(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 133, 3)), "none.pt")


class FakePredictor:
    """Stands in for SAM2's video predictor: records the prompts, 'segments' the brightest pixels."""
    image_size = 16

    def __init__(self, module):
        self.module, self.calls = module, []

    def init_state(self, video_path):
        images, height, width = self.module.load_video_frames(video_path, self.image_size, True)
        return {"images": images, "frames": video_path, "size": (height, width)}

    def reset_state(self, state):
        self.calls.append(("reset", len(state["frames"])))

    def add_new_points_or_box(self, inference_state, frame_idx, obj_id, points, labels):
        self.calls.append(("points", frame_idx, obj_id, points.tolist(), labels.tolist()))

    def propagate_in_video(self, state):
        import torch
        for index, frame in enumerate(state["frames"]):
            logits = torch.from_numpy(frame[..., 0].astype(np.float32) - 127.5)[None, None]
            yield index, [1], logits


def test_sam2_masks_drive_the_predictor_chunk_by_chunk(monkeypatch):
    module = types.ModuleType("sam2.sam2_video_predictor")
    module.load_video_frames = lambda *a, **k: pytest.fail("the in-memory loader must be used")
    build = types.ModuleType("sam2.build_sam")
    build.build_sam2_video_predictor = lambda *a, **k: pytest.fail("a given predictor must be used")
    monkeypatch.setitem(sys.modules, "sam2", types.ModuleType("sam2"))
    monkeypatch.setitem(sys.modules, "sam2.sam2_video_predictor", module)
    monkeypatch.setitem(sys.modules, "sam2.build_sam", build)
    frames = np.zeros((5, 12, 10, 3), np.uint8)
    frames[:, 2:6, 3:7, 0] = 255
    predictor = FakePredictor(module)
    progress = []
    masks = M.sam2_person_masks(frames, body_keypoints(5) / 20, "unused.pt", chunk_frames=3, predictor=predictor,
                                progress=lambda d, t: progress.append((d, t)))
    assert masks.dtype == np.uint8 and masks.shape == (5, 12, 10)
    assert masks[:, 2:6, 3:7].all() and masks.sum() == 5 * 16
    assert [c[:3] for c in predictor.calls] == [("reset", 3), ("points", 0, 1), ("reset", 2), ("points", 0, 1)]
    assert predictor.calls[1][4] == [1] * 8 and len(predictor.calls[1][3]) == 8
    assert progress == [(1, 2), (2, 2)]
    assert module.load_video_frames.__name__ == "<lambda>"  # the original loader is restored
