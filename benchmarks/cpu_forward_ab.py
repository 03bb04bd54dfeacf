"""Three DiT forwards on the CPU with the `wan_animate` of a given checkout: one side of a `farm-bench --vs` A/B.

A medium random model (dim 512, 4 heads of 128, 4 blocks, ffn 1536) at 5 x 24 x 40 latents (4,800 tokens), one
thread, in the dtype given. Run it for two checkouts in turn; farm-bench pairs the whole-process times:

  git worktree add ../before <commit>
  farm-bench -n 5 --timeout 600 --vs 'python3 benchmarks/cpu_forward_ab.py ../before bfloat16' \
      -- python3 benchmarks/cpu_forward_ab.py . bfloat16
"""
import sys
from pathlib import Path

import torch

checkout, dtype_name = Path(sys.argv[1]).resolve(), sys.argv[2]
sys.path.insert(0, str(checkout))

from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT  # noqa: E402

assert Path(sys.modules["wan_animate"].__file__).resolve().is_relative_to(checkout), "imported another wan_animate"
torch.manual_seed(0)
torch.set_num_threads(1)
dtype = getattr(torch, dtype_name)
config = WanAnimateConfig(dim=512, ffn_dim=1536, num_heads=4, num_layers=4, text_dim=64, clip_dim=32,
                          motion_encoder_dim=32, motion_dim=4, motion_channels=(8, 16, 16, 16), face_hidden_dim=32)
model = WanAnimateDiT(config).to(dtype).eval().requires_grad_(False)
frames, h, w = 5, 24, 40
inputs = dict(x=torch.randn(16, frames, h, w, dtype=dtype), t=torch.tensor([900.0]),
              context=torch.randn(20, 64, dtype=dtype), clip_fea=torch.randn(1, 257, 32, dtype=dtype),
              y=torch.randn(20, frames, h, w, dtype=dtype), pose_latents=torch.randn(16, frames - 1, h, w, dtype=dtype),
              motion_vec=torch.randn(1, frames, 5, 512, dtype=dtype))
with torch.no_grad():
    for _ in range(3):
        model(**inputs)
