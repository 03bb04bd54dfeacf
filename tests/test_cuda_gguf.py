"""GGUF on a GPU (`python3 -m pytest -m cuda -s tests/`; skipped without one): dequantisation on the device equals
the `gguf` reference bit for bit, and offloading quantised blocks gives the resident forward bit for bit, with and
without a LoRA on the quantised layers."""
import dataclasses

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config, tiny_inputs
from helpers_gguf import Q, gguf_lora, random_blocks, write_gguf
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.gguf_dequant import QUANT_TYPES, dequantize

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
WIDE = dict(dim=512, ffn_dim=1024, num_heads=4, num_layers=6, text_dim=32, clip_dim=32)


@pytest.mark.parametrize("name", [t.name for t in QUANT_TYPES.values() if t.block_size > 1])
def test_dequantisation_on_the_gpu_equals_the_gguf_reference(name):
    qtype = Q[name]
    raw = random_blocks(qtype, 64, 1024, seed=3, scale=0.05)
    reference = gguf.quants.dequantize(raw, qtype)
    ours = dequantize(torch.from_numpy(raw).cuda(), int(qtype), raw.shape[:1] + (1024,)).cpu()
    assert np.array_equal(ours.numpy().view(np.int32), reference.view(np.int32))


def test_offloaded_quantised_blocks_equal_resident_with_and_without_a_lora(tmp_path):
    config = tiny_config(**WIDE)
    path = tmp_path / "animate-Q4_K.gguf"
    write_gguf(build_tiny_dit(seed=7, config=config), path, Q.Q4_K)
    handle = DiTHandle(str(path), DiTOptions(dtype=torch.bfloat16, offload=0))
    lora = tmp_path / "lora.safetensors"
    save_file(gguf_lora(handle.model(), seed=8), str(lora))
    inputs = {k: v.cuda() if k == "t" else v.to("cuda", torch.bfloat16)
              for k, v in tiny_inputs(config, frames=5, height=16, width=24).items()}

    def forward(model):
        with torch.no_grad():
            motion = model.encode_face(inputs["face_pixels"])
            return model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                         inputs["pose_latents"], motion).float().cpu()

    def resident_and_offloaded(resident_handle):
        with resident_handle.activate("cuda", 480) as model:
            resident = forward(model)
        offloaded = dataclasses.replace(resident_handle, options=dataclasses.replace(handle.options, offload=4))
        with offloaded.activate("cuda", 480) as model:
            return resident, forward(model)

    clean, offloaded_clean = resident_and_offloaded(handle)
    assert torch.equal(offloaded_clean, clean)
    with_lora, offloaded_with_lora = resident_and_offloaded(handle.with_lora(str(lora), 1.0))
    assert torch.equal(offloaded_with_lora, with_lora)
    assert (with_lora - clean).abs().max() > 0.01 * clean.abs().max()  # the LoRA is on, on the GPU too
    with handle.activate("cuda", 480) as model:  # removed again: exactly the clean output
        assert torch.equal(forward(model), clean)
