"""Pose + face extraction speed (frames per second) on CPU or GPU with stand-ins of the official ONNX models.

The official `yolov10m.onnx` and `vitpose_h_wholebody.onnx` cannot be downloaded here, so this script builds
random-weight ONNX models with the same compute:
- detector: a YOLOv8/v10-style CSP network at 640x640 whose widths are chosen to match YOLOv10-M's published cost
  (59.1 GFLOPs = 29.6 G multiply-adds), ending in the [N, 300, 6] top-k output of YOLOv10;
- pose: ViTPose-H exactly as to shapes (patch 16, 1280 wide, 32 blocks, 16 heads, MLP 5120, 256x192 input, two 4x4
  deconvolutions of 256 channels and a 1x1 head to 133 heatmaps of 64x48): ~124 G multiply-adds per crop, as
  published (122.9 GFLOPs counted as multiply-adds). The 32 blocks share ONE set of weights so the file is 80 MB
  rather than 2.5 GB; the arithmetic is unchanged, but at batch 1 the real model also streams 2.5 GB of weights per
  crop, which this stand-in cannot show (it is slightly optimistic at small batches).
`--pose vit-b` swaps in ViTPose-B's shapes (768 wide, 12 blocks: ~17.6 G multiply-adds) for comparison.

It then times the stages of `extract_poses` on synthetic frames of each size - detection (`PersonDetector.detect`:
resize, ONNX, NMS) and pose (`WholeBodyPoseModel.predict`: crop, ONNX, DARK decoding) on a fixed person box, since
random weights box nothing meaningful - and the face crops (`detect_face_boxes` + `crop_faces`), and prints a table.
Every frame costs the same whatever the models find, so random weights give the real models' speed.

    python benchmarks/preprocess_fps.py --frames 8 --sizes 512 720
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.face_crop import crop_faces, detect_face_boxes
from wan_animate.preprocess.pose_model import WholeBodyPoseModel

FRAME_SIZES = {512: (512, 912), 720: (720, 1280)}  # 16:9 frames: (height, width)
POSE_CONFIGS = {"vit-h": {"dim": 1280, "depth": 32, "heads": 16}, "vit-b": {"dim": 768, "depth": 12, "heads": 12}}


# ---- stand-in models -------------------------------------------------------------------------------------------

def conv(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = conv(c, c), conv(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class C2f(nn.Module):
    """YOLOv8's CSP block: split, n bottlenecks on one half, concatenate every stage, 1x1 fuse."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.hidden = c_out // 2
        self.stem = conv(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden) for _ in range(n))
        self.fuse = conv((2 + n) * self.hidden, c_out, 1)

    def forward(self, x):
        parts = list(self.stem(x).chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1))


class YoloLike(nn.Module):
    """Backbone (strides 2..32), FPN/PAN neck, per-scale heads (4 box + 80 class channels), top-300 output."""

    def __init__(self, w=(40, 80, 160, 320, 512), n=(2, 4, 4, 2), classes: int = 80):
        super().__init__()
        self.stem = nn.Sequential(conv(3, w[0], 3, 2), conv(w[0], w[1], 3, 2), C2f(w[1], w[1], n[0]))
        self.p3 = nn.Sequential(conv(w[1], w[2], 3, 2), C2f(w[2], w[2], n[1]))
        self.p4 = nn.Sequential(conv(w[2], w[3], 3, 2), C2f(w[3], w[3], n[2]))
        self.p5 = nn.Sequential(conv(w[3], w[4], 3, 2), C2f(w[4], w[4], n[3]))
        self.up4 = C2f(w[4] + w[3], w[3], n[3])
        self.up3 = C2f(w[3] + w[2], w[2], n[3])
        self.down4 = nn.Sequential(conv(w[2], w[2], 3, 2))
        self.out4 = C2f(w[2] + w[3], w[3], n[3])
        self.down5 = nn.Sequential(conv(w[3], w[3], 3, 2))
        self.out5 = C2f(w[3] + w[4], w[4], n[3])
        self.heads = nn.ModuleList(nn.Sequential(conv(c, c), conv(c, c), nn.Conv2d(c, 4 + classes, 1))
                                   for c in (w[2], w[3], w[4]))

    def forward(self, x):  # [N, 3, 640, 640] -> [N, 300, 6]
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        u4 = self.up4(torch.cat([nn.functional.interpolate(p5, scale_factor=2.0), p4], 1))
        u3 = self.up3(torch.cat([nn.functional.interpolate(u4, scale_factor=2.0), p3], 1))
        d4 = self.out4(torch.cat([self.down4(u3), u4], 1))
        d5 = self.out5(torch.cat([self.down5(d4), p5], 1))
        outs = [head(f).flatten(2) for head, f in zip(self.heads, (u3, d4, d5))]
        pred = torch.cat(outs, dim=2).transpose(1, 2)  # [N, 8400, 84]
        scores, classes = pred[..., 4:].sigmoid().max(dim=-1)
        top, index = scores.topk(300, dim=1)
        boxes = torch.gather(pred[..., :4], 1, index[..., None].expand(-1, -1, 4)).sigmoid() * 640
        label = torch.gather(classes, 1, index).float()
        return torch.cat([boxes, top[..., None], label[..., None]], dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # [N, L, C]
        n, length, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(n, length, c))
        return x + self.mlp(self.norm2(x))


class ViTPoseLike(nn.Module):
    """ViTPose: 16x16 patches of a 256x192 crop, `depth` applications of one shared block, classic deconv head."""

    def __init__(self, dim: int, depth: int, heads: int, keypoints: int = 133):
        super().__init__()
        self.depth = depth
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.pos = nn.Parameter(torch.zeros(1, 16 * 12, dim))
        self.block = Block(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(dim, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.ConvTranspose2d(256, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, keypoints, 1))

    def forward(self, x):  # [N, 3, 256, 192] -> [N, 133, 64, 48]
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # [N, 192, C]
        for _ in range(self.depth):
            tokens = self.block(tokens)
        grid = self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, 16, 12)
        return self.head(grid)


def count_macs(model: nn.Module, example: torch.Tensor) -> float:
    """Multiply-adds of convolutions, linear layers and attention products, in G."""
    total = [0.0]

    def on_conv(module, inputs, output):
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        if isinstance(module, nn.ConvTranspose2d):
            total[0] += inputs[0].numel() * module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        else:
            total[0] += output.numel() * kernel

    def on_linear(module, inputs, output):
        total[0] += output.numel() * module.in_features

    def on_block(module, inputs, output):
        n, length, c = inputs[0].shape
        total[0] += 2 * n * length * length * c  # q k^T and attn v

    hooks = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(on_linear))
        elif isinstance(module, Block):
            hooks.append(module.register_forward_hook(on_block))
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    return total[0] / 1e9


def export(model: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=[names[0]], output_names=[names[1]],
                          dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return path


def build_models(folder: Path, pose: str) -> tuple[Path, Path, float, float]:
    torch.manual_seed(0)
    detector, pose_net = YoloLike(), ViTPoseLike(**POSE_CONFIGS[pose])
    det_example, pose_example = torch.rand(1, 3, 640, 640), torch.rand(1, 3, 256, 192)
    det_macs, pose_macs = count_macs(detector, det_example), count_macs(pose_net, pose_example)
    det_path = export(detector, det_example, folder / "yolov10m_like.onnx", ("images", "output0"))
    pose_path = export(pose_net, pose_example, folder / f"vitpose_{pose}_like.onnx", ("input", "output"))
    return det_path, pose_path, det_macs, pose_macs


# ---- timing ----------------------------------------------------------------------------------------------------

def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)


class Stopwatch:
    """Wall-clock and process CPU seconds per named stage."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, name: str, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = time.process_time() - cpu
        return result


def time_size(frames: np.ndarray, detector: PersonDetector, pose: WholeBodyPoseModel) -> Stopwatch:
    watch = Stopwatch()
    detections = watch.run("detect", detector.detect, frames)
    # the random detector boxes whatever it likes; time the pose model on a fixed, realistic person box
    height, width = frames.shape[1:3]
    boxes = np.tile([width * 0.35, height * 0.1, width * 0.65, height * 0.95], (len(frames), 1))
    keypoints = watch.run("pose", pose.predict, frames, boxes)
    watch.run("face", lambda: crop_faces(frames, detect_face_boxes(keypoints, (height, width)).boxes))
    assert len(detections) == len(frames)
    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames timed per size (after 1 warm-up frame)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 720], choices=sorted(FRAME_SIZES))
    parser.add_argument("--pose", choices=sorted(POSE_CONFIGS), default="vit-h")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="frames per ONNX call")
    parser.add_argument("--model-dir", type=Path, default=Path("benchmarks/out/models"))
    args = parser.parse_args()

    det_path, pose_path, det_macs, pose_macs = build_models(args.model_dir, args.pose)
    detector = PersonDetector(det_path, device=args.device, batch_size=args.batch)
    pose = WholeBodyPoseModel(pose_path, device=args.device, batch_size=args.batch)
    print(f"detector {det_path.name}: {det_macs:.1f} G multiply-adds per frame at 640x640")
    print(f"pose     {pose_path.name}: {pose_macs:.1f} G multiply-adds per person crop at 256x192")
    cores = os.cpu_count() or 1
    print(f"providers: {pose.model.providers}, {cores} CPU cores, load average {os.getloadavg()[0]:.1f}, "
          f"batch {args.batch}")
    print("wall: seconds per frame as measured; cpu: process CPU seconds per frame / cores, i.e. the wall time of")
    print("an otherwise idle machine with these cores (the two differ when other jobs share the CPU)")
    print(f"{'frame':>10} {'clock':>5} {'detect s':>9} {'pose s':>8} {'face s':>7} {'fps':>6}  pose share")
    for size in args.sizes:
        height, width = FRAME_SIZES[size]
        video = synthetic_video(args.frames + 1, height, width)
        time_size(video[:1], detector, pose)  # warm-up
        watch = time_size(video[1:], detector, pose)
        for clock, seconds in (("wall", watch.wall), ("cpu", {k: v / cores for k, v in watch.cpu.items()})):
            per = {k: v / args.frames for k, v in seconds.items()}
            total = sum(per.values())
            print(f"{width:>5}x{height:<4} {clock:>5} {per['detect']:>9.3f} {per['pose']:>8.3f} {per['face']:>7.4f} "
                  f"{1 / total:>6.2f}  {100 * per['pose'] / total:.0f}%")


if __name__ == "__main__":
    main()
