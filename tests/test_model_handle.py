"""DiTHandle: lazy loading shared between handles, LoRA stacks kept in line with what each handle asks for."""
import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.attention import get_attention_backend

TARGET = "blocks.0.self_attn.q"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("handle")
    model = build_tiny_dit(seed=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "dit.safetensors"))
    weight = model.state_dict()[f"{TARGET}.weight"]
    gen = torch.Generator().manual_seed(2)
    down, up = torch.randn(2, weight.shape[1], generator=gen), torch.randn(weight.shape[0], 2, generator=gen)
    save_file({f"diffusion_model.{TARGET}.lora_A.weight": down, f"diffusion_model.{TARGET}.lora_B.weight": up},
              str(root / "lora.safetensors"))
    return root, weight.clone(), up @ down


def weight_of(handle: DiTHandle) -> torch.Tensor:
    return handle.model().state_dict()[f"{TARGET}.weight"]


def test_handles_share_one_model_and_merge_their_loras(files):
    root, base, delta = files
    handle = DiTHandle(str(root / "dit.safetensors"), DiTOptions(dtype=torch.float32))
    stacked = handle.with_lora(str(root / "lora.safetensors"), 0.5)
    assert stacked.model() is handle.model()
    assert torch.equal(weight_of(handle), base)

    summary = stacked.sync_loras()
    assert "lora" in summary and "changed 1 tensors" in summary
    torch.testing.assert_close(weight_of(stacked), base + 0.5 * delta, rtol=0, atol=1e-6)
    assert stacked.sync_loras() == summary  # same stack: nothing reloaded or merged twice
    torch.testing.assert_close(weight_of(stacked), base + 0.5 * delta, rtol=0, atol=1e-6)


def test_a_different_stack_reloads_the_clean_weights(files):
    root, base, delta = files
    handle = DiTHandle(str(root / "dit.safetensors"), DiTOptions(dtype=torch.float32))
    handle.with_lora(str(root / "lora.safetensors"), 1.0).sync_loras()
    handle.sync_loras()
    assert torch.equal(weight_of(handle), base)
    handle.with_lora(str(root / "lora.safetensors"), -1.0).sync_loras()
    torch.testing.assert_close(weight_of(handle), base - delta, rtol=0, atol=1e-6)


def test_activate_scopes_the_attention_backend(files):
    root, _, _ = files
    before = get_attention_backend()
    handle = DiTHandle(str(root / "dit.safetensors"), DiTOptions(dtype=torch.float32, attention="auto"))
    with handle.activate("cpu", tokens=64) as model:
        assert get_attention_backend() == "auto"
        assert model is handle.model()
    assert get_attention_backend() == before


def test_unknown_storage_is_refused():
    with pytest.raises(ValueError, match="weight storage is 'int4'"):
        DiTOptions(storage="int4")
