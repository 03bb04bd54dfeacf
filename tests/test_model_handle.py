"""DiTHandle: lazy loading shared between handles, LoRA stacks kept in line with what each handle asks for."""
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import wan_animate.loading.model_handle as model_handle
from helpers_dit import build_tiny_dit, run_dit, tiny_inputs
from wan_animate.loading.dit import load_dit
from wan_animate.loading.lora import apply_loras, load_lora, remove_loras
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.attention import get_attention_backend
from wan_animate.runtime.offload import enable_block_offload

TARGET = "blocks.0.self_attn.q"
FP8 = DiTOptions(dtype=torch.float32, storage="fp8_e4m3fn")
FLOAT = DiTOptions(dtype=torch.float32)
BF16 = DiTOptions(dtype=torch.bfloat16)


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
    save_file(wide_lora(model, seed=3), str(root / "wide.safetensors"))
    return root, weight.clone(), up @ down


def wide_lora(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Low-rank deltas on Linear layers of the first and last blocks and the head, plus dense diffs on a norm, a
    bias and a modulation (what distill LoRAs carry)."""
    gen = torch.Generator().manual_seed(seed)
    state, params = {}, dict(model.named_parameters())
    for name in ("blocks.0.self_attn.q", "blocks.0.ffn.0", "blocks.5.cross_attn.v", "blocks.5.ffn.2", "head.head"):
        out_features, in_features = params[f"{name}.weight"].shape
        state[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(4, in_features, generator=gen) * 0.2
        state[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(out_features, 4, generator=gen) * 0.2
        state[f"diffusion_model.{name}.alpha"] = torch.tensor(2.0)
    dense = (("blocks.1.norm3.diff", "blocks.1.norm3.weight"), ("blocks.5.ffn.0.diff_b", "blocks.5.ffn.0.bias"),
             ("blocks.2.modulation.diff", "blocks.2.modulation"))
    for key, param in dense:
        state[f"diffusion_model.{key}"] = torch.randn(params[param].shape, generator=gen) * 0.1
    return state


def effective_weight(handle: DiTHandle, name: str = TARGET) -> torch.Tensor:
    """The weight a Linear layer of the handle's model acts with, LoRA deltas included: W = layer(I) - b."""
    layer = handle.model().get_submodule(name)
    with torch.no_grad():
        return (layer(torch.eye(layer.in_features)) - layer.bias).T


def reference_outputs(path: str, options: DiTOptions, stacks: list[list[tuple[str, float]]], inputs) -> list:
    """The outputs of a freshly loaded model with each stack merged in turn: what runs with those stacks must give."""
    model = load_dit(path, dtype=options.dtype, storage_dtype=model_handle.STORAGE[options.storage])
    outputs = []
    for stack in stacks:
        report = apply_loras(model, [(load_lora(file), strength) for file, strength in stack]) if stack else None
        outputs.append(run_dit(model, inputs))
        if report is not None:
            remove_loras(model, report)
    return outputs


def test_handles_share_one_model_and_apply_their_loras(files):
    root, base, delta = files
    handle = DiTHandle(str(root / "dit.safetensors"), FLOAT)
    stacked = handle.with_lora(str(root / "lora.safetensors"), 0.5)
    assert stacked.model() is handle.model()
    assert torch.equal(effective_weight(handle), base)

    summary = stacked.sync_loras()
    assert "lora" in summary and "changed 1 tensors" in summary
    torch.testing.assert_close(effective_weight(stacked), base + 0.5 * delta, rtol=0, atol=1e-5)
    assert torch.equal(handle.model().state_dict()[f"{TARGET}.weight"], base)  # the weight itself is never written
    assert stacked.sync_loras() == summary  # same stack: nothing applied twice
    torch.testing.assert_close(effective_weight(stacked), base + 0.5 * delta, rtol=0, atol=1e-5)


def test_a_different_stack_restores_the_clean_weights(files):
    root, base, delta = files
    handle = DiTHandle(str(root / "dit.safetensors"), FLOAT)
    handle.with_lora(str(root / "lora.safetensors"), 1.0).sync_loras()
    handle.sync_loras()
    assert torch.equal(effective_weight(handle), base)
    assert type(handle.model().get_submodule(TARGET)) is nn.Linear
    handle.with_lora(str(root / "lora.safetensors"), -1.0).sync_loras()
    torch.testing.assert_close(effective_weight(handle), base - delta, rtol=0, atol=1e-5)


@pytest.mark.parametrize("options", [FLOAT, BF16, FP8], ids=["float32", "bf16", "fp8"])
def test_every_run_uses_exactly_its_handles_stack(files, options):
    """Handles of one loader with different stacks, run in turn through `activate` (like samplers re-queued with a
    changed strength, a LoRA removed, or two samplers sharing one loader), each give what a fresh model with their
    stack gives."""
    root, _, _ = files
    dit, lora, wide = str(root / "dit.safetensors"), str(root / "lora.safetensors"), str(root / "wide.safetensors")
    base = DiTHandle(dit, options)
    stacks = [[(wide, 1.0)], [(wide, 0.5)], [], [(wide, 1.0), (lora, 0.3)]]
    inputs = {k: v.to(options.dtype) if v.is_floating_point() else v for k, v in tiny_inputs(seed=4).items()}
    # bf16: against the float32 merge; bf16 rounding moves outputs by up to 0.05 here, a wrong stack by over 1
    float_inputs = {k: v.float() for k, v in inputs.items()}
    expected = reference_outputs(dit, replace(options, dtype=torch.float32), stacks, float_inputs)
    tolerance = 0.08 if options.dtype == torch.bfloat16 else 1e-5
    for stack, reference in zip(stacks, expected):
        handle = base
        for path, strength in stack:
            handle = handle.with_lora(path, strength)
        with handle.activate("cpu", tokens=64) as model:
            out = run_dit(model, inputs).float()
        torch.testing.assert_close(out, reference, rtol=0, atol=tolerance, msg=f"stack {stack}")


def test_switching_stacks_never_reloads_the_checkpoint(files, monkeypatch):
    """Changing a strength, removing or adding a LoRA keeps the one model in memory: the checkpoint is read once."""
    root, _, _ = files
    loads = []

    def counting_load_dit(*args, **kwargs):
        loads.append(args[0])
        return load_dit(*args, **kwargs)

    monkeypatch.setattr(model_handle, "load_dit", counting_load_dit)
    base = DiTHandle(str(root / "dit.safetensors"), FLOAT)
    wide = str(root / "wide.safetensors")
    first = base.model()
    for handle in (base.with_lora(wide, 1.0), base.with_lora(wide, 0.25), base, base.with_lora(wide, -1.0)):
        with handle.activate("cpu", tokens=64) as model:
            assert model is first
    assert len(loads) == 1


def test_strength_change_reads_no_file(files, monkeypatch):
    """The LoRA files of the current stack stay parsed: a strength change reads nothing from disk."""
    root, _, _ = files
    wide = str(root / "wide.safetensors")
    base = DiTHandle(str(root / "dit.safetensors"), FLOAT)
    base.with_lora(wide, 1.0).sync_loras()
    reads = []
    monkeypatch.setattr(model_handle, "load_lora", lambda *args, **kwargs: reads.append(args) or load_lora(*args))
    base.with_lora(wide, 0.3).sync_loras()
    base.with_lora(wide, 0.7).with_lora(wide, -0.2).sync_loras()
    assert reads == []


def test_a_lora_file_replaced_on_disk_is_applied_again(files, tmp_path):
    root, base, delta = files
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes((root / "lora.safetensors").read_bytes())
    handle = DiTHandle(str(root / "dit.safetensors"), FLOAT).with_lora(str(lora), 1.0)
    handle.sync_loras()
    weight = handle.model().get_submodule(TARGET).weight
    save_file({f"diffusion_model.{TARGET}.diff": torch.ones_like(weight)}, str(lora))
    handle.sync_loras()
    torch.testing.assert_close(effective_weight(handle), base + 1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", [FLOAT, FP8], ids=["float32", "fp8"])
def test_lora_factors_travel_with_offloaded_blocks(files, options):
    """The LoRA factors of an offloaded block are packed with it: an offloaded run equals a resident one."""
    root, _, _ = files
    handle = DiTHandle(str(root / "dit.safetensors"), options).with_lora(str(root / "wide.safetensors"), 1.0)
    handle.sync_loras()
    model = handle.model()
    inputs = tiny_inputs(seed=5)
    resident = run_dit(model, inputs)
    offloader = enable_block_offload(model, "cpu", offload_count=3, prefetch=1)
    try:
        packed = {id(t) for t in offloader.packed[5].tensors}
        factors = [b for name, b in model.blocks[5].named_buffers() if name.endswith(("_up", "_down"))]
        assert factors and all(id(b) in packed for b in factors)
        offloaded = run_dit(model, inputs)
    finally:
        offloader.remove()
    assert torch.equal(offloaded, resident)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
@pytest.mark.parametrize("options", [DiTOptions(dtype=torch.bfloat16, offload=3), DiTOptions(
    dtype=torch.bfloat16, storage="fp8_e4m3fn", offload=3)], ids=["bf16", "fp8"])
def test_stack_switches_on_gpu_with_offloading(files, options):
    """On the GPU with blocks streamed from host memory: a stack applied again gives the same output bit for bit, and
    after its LoRAs are removed the model gives what a freshly loaded one gives."""
    root, _, _ = files
    dit, wide = str(root / "dit.safetensors"), str(root / "wide.safetensors")
    base = DiTHandle(dit, options)
    inputs = {k: v.cuda().to(torch.bfloat16) if k != "t" else v.cuda() for k, v in tiny_inputs(seed=6).items()}
    outputs = {}
    for label, handle in (("lora", base.with_lora(wide, 1.0)), ("none", base), ("half", base.with_lora(wide, 0.5)),
                          ("lora again", base.with_lora(wide, 1.0))):
        with handle.activate("cuda", tokens=64) as model:
            outputs[label] = run_dit(model, inputs).cpu()
    assert torch.equal(outputs["lora"], outputs["lora again"])
    assert not torch.equal(outputs["lora"], outputs["none"]) and not torch.equal(outputs["half"], outputs["none"])
    fresh = DiTHandle(dit, options)
    with fresh.activate("cuda", tokens=64) as model:
        assert torch.equal(run_dit(model, inputs).cpu(), outputs["none"])


def test_identity_covers_file_storage_and_lora_stack(files):
    root, _, _ = files
    dit, wide = str(root / "dit.safetensors"), str(root / "wide.safetensors")
    base = DiTHandle(dit, FLOAT)
    identities = [base.identity(), DiTHandle(dit, FP8).identity(), DiTHandle(dit, BF16).identity(),
                  base.with_lora(wide, 1.0).identity(), base.with_lora(wide, 0.5).identity(),
                  base.with_lora(str(root / "lora.safetensors"), 1.0).identity()]
    assert all(a != b for i, a in enumerate(identities) for b in identities[i + 1:])
    assert base.identity() == DiTHandle(dit, FLOAT).identity()


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
