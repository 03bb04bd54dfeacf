"""LoRA loading and application on tiny models: hand-merged equality, layouts, reports, errors, fp8, undo."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from wan_animate.loading.lora import (
    apply_loras,
    applied_loras,
    load_lora,
    remove_all_loras,
    remove_loras,
    set_loras,
)
from wan_animate.loading.lora_quantised import LoraFP8Linear
from wan_animate.runtime.fp8 import FP8Linear, linear_weight, swap_linears_to_fp8

RANK = 3


class TinySelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)


class TinyCrossAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.k_img = nn.Linear(dim, dim)


class TinyBlock(nn.Module):
    def __init__(self, dim: int = 8, ffn: int = 12):
        super().__init__()
        self.self_attn = TinySelfAttention(dim)
        self.cross_attn = TinyCrossAttention(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim))

    def forward(self, x):
        x = self.norm3(x + self.self_attn.q(x) + self.cross_attn.k_img(x))
        return x + self.ffn(x)


class TinyModel(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.patch_embedding = nn.Conv3d(4, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.blocks = nn.ModuleList([TinyBlock(dim) for _ in range(2)])

    def forward(self, video):  # video [1, 4, T, H, W]
        x = self.patch_embedding(video).flatten(2).transpose(1, 2)  # [1, L, dim]
        for block in self.blocks:
            x = block(x)
        return x


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel().to(dtype)


def factors(seed: int, targets: dict[str, tuple[int, int]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (down [RANK, in], up [out, RANK]) with random values."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(RANK, fan_in, generator=g), torch.randn(fan_out, RANK, generator=g) * 0.1)
        for name, (fan_in, fan_out) in targets.items()
    }


LINEARS = {"blocks.0.self_attn.q": (8, 8), "blocks.1.cross_attn.k_img": (8, 8), "blocks.1.ffn.0": (8, 12)}


def peft_state(pairs, prefix: str = "", adapter: str = "") -> dict[str, torch.Tensor]:
    state = {}
    for name, (down, up) in pairs.items():
        state[f"{prefix}{name}.lora_A{adapter}.weight"] = down
        state[f"{prefix}{name}.lora_B{adapter}.weight"] = up
    return state


def kohya_state(pairs, alpha: float, underscore: bool) -> dict[str, torch.Tensor]:
    state = {}
    for name, (down, up) in pairs.items():
        key = "lora_unet_" + name.replace(".", "_") if underscore else f"diffusion_model.{name}"
        state[f"{key}.lora_down.weight"] = down
        state[f"{key}.lora_up.weight"] = up
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def save_safetensors(tmp_path, name: str, state) -> str:
    path = str(tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def hand_merged(model: nn.Module, pairs, strength: float, scale: float = 1.0) -> dict[str, torch.Tensor]:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, (down, up) in pairs.items():
        weights[f"{name}.weight"] = weights[f"{name}.weight"] + strength * scale * up @ down
    return weights


def assert_weights(model: nn.Module, expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=atol, rtol=0, msg=f"weight {key}")


def test_apply_equals_hand_merge_and_changes_outputs(tmp_path):
    pairs = factors(1, LINEARS)
    lora = load_lora(save_safetensors(tmp_path, "comfy.safetensors", peft_state(pairs, "diffusion_model.")))
    model = tiny_model()
    expected = hand_merged(model, pairs, 0.7)
    video = torch.randn(1, 4, 2, 4, 4)
    before = model(video)
    report = apply_loras(model, [(lora, 0.7)])
    assert_weights(model, expected)
    assert report.matched["comfy.safetensors"] == sorted(f"{n}.weight" for n in LINEARS)
    assert report.unmatched["comfy.safetensors"] == []
    reference = TinyModel()
    reference.load_state_dict(expected)
    torch.testing.assert_close(model(video), reference(video))
    assert (model(video) - before).abs().max() > 1e-3


def test_all_layouts_give_the_same_weights(tmp_path):
    pairs = factors(2, LINEARS)
    official = tmp_path / "official.ckpt"
    torch.save({"state_dict": peft_state(pairs)}, official)
    peft_adapter = tmp_path / "peft_adapter.pt"
    torch.save({"state_dict": peft_state(pairs, "base_model.model.", ".default")}, peft_adapter)
    paths = [
        str(official),
        str(peft_adapter),
        save_safetensors(tmp_path, "comfy.safetensors", peft_state(pairs, "diffusion_model.")),
        save_safetensors(tmp_path, "comfy_full.safetensors", peft_state(pairs, "model.diffusion_model.")),
        save_safetensors(tmp_path, "kohya_dotted.safetensors", kohya_state(pairs, RANK, underscore=False)),
        save_safetensors(tmp_path, "kohya_underscore.safetensors", kohya_state(pairs, RANK, underscore=True)),
    ]
    expected = hand_merged(tiny_model(), pairs, 1.0)
    for path in paths:
        model = tiny_model()
        report = apply_loras(model, [(load_lora(path), 1.0)])
        assert sum(len(v) for v in report.matched.values()) == len(LINEARS), path
        assert_weights(model, expected)


def test_diffusers_names_map_to_the_original_ones(tmp_path):
    pairs = factors(17, LINEARS)
    diffusers_names = {
        "blocks.0.self_attn.q": "blocks.0.attn1.to_q",
        "blocks.1.cross_attn.k_img": "blocks.1.attn2.add_k_proj",
        "blocks.1.ffn.0": "blocks.1.ffn.net.0.proj",
    }
    state = peft_state({diffusers_names[name]: pair for name, pair in pairs.items()}, "transformer.")
    state["transformer.blocks.0.norm2.diff"] = torch.ones(8)  # diffusers' norm2 is the original affine norm3
    model = tiny_model()
    expected = hand_merged(model, pairs, 1.0)
    expected["blocks.0.norm3.weight"] = expected["blocks.0.norm3.weight"] + 1
    report = apply_loras(model, [(load_lora(save_safetensors(tmp_path, "d.safetensors", state)), 1.0)])
    assert report.unmatched["d.safetensors"] == []
    assert_weights(model, expected)


def test_kohya_alpha_scales_by_alpha_over_rank(tmp_path):
    pairs = factors(3, {"blocks.0.ffn.2": (12, 8)})
    path = save_safetensors(tmp_path, "k.safetensors", kohya_state(pairs, alpha=1.5, underscore=True))
    model = tiny_model()
    expected = hand_merged(model, pairs, 0.8, scale=1.5 / RANK)
    apply_loras(model, [(load_lora(path), 0.8)])
    assert_weights(model, expected)


def test_diff_and_diff_b_add_to_weights_and_biases(tmp_path):
    g = torch.Generator().manual_seed(4)
    state = {
        "diffusion_model.blocks.0.norm3.diff": torch.randn(8, generator=g),
        "diffusion_model.blocks.0.norm3.diff_b": torch.randn(8, generator=g),
        "diffusion_model.blocks.1.ffn.0.diff_b": torch.randn(12, generator=g),
        "diffusion_model.blocks.1.modulation.diff": torch.randn(1, 6, 8, generator=g),
    }
    model = tiny_model()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for key, delta in state.items():
        name = key.removeprefix("diffusion_model.")
        if name.endswith(".diff_b"):
            expected[name.removesuffix(".diff_b") + ".bias"] += 0.5 * delta
        elif name.endswith("modulation.diff"):
            expected[name.removesuffix(".diff")] += 0.5 * delta
        else:
            expected[name.removesuffix(".diff") + ".weight"] += 0.5 * delta
    report = apply_loras(model, [(load_lora(save_safetensors(tmp_path, "d.safetensors", state)), 0.5)])
    assert_weights(model, expected)
    assert "blocks.1.modulation" in report.matched["d.safetensors"]


def test_diff_m_adds_to_the_modulation(tmp_path):
    """LightX2V distill LoRAs carry a block's modulation delta as `<block>.diff_m`."""
    g = torch.Generator().manual_seed(5)
    state = {"diffusion_model.blocks.0.diff_m": torch.randn(1, 6, 8, generator=g),
             "diffusion_model.blocks.1.diff_m": torch.randn(1, 6, 8, generator=g),
             "diffusion_model.blocks.1.ffn.0.diff_b": torch.randn(12, generator=g)}
    model = tiny_model()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected["blocks.0.modulation"] += 0.7 * state["diffusion_model.blocks.0.diff_m"]
    expected["blocks.1.modulation"] += 0.7 * state["diffusion_model.blocks.1.diff_m"]
    expected["blocks.1.ffn.0.bias"] += 0.7 * state["diffusion_model.blocks.1.ffn.0.diff_b"]
    lora = load_lora(save_safetensors(tmp_path, "distill.safetensors", state))
    assert lora.ignored_keys == []
    report = apply_loras(model, [(lora, 0.7)])
    assert_weights(model, expected)
    assert {"blocks.0.modulation", "blocks.1.modulation"} <= set(report.matched["distill.safetensors"])


def test_conv_lora_merges_into_the_patch_embedding(tmp_path):
    g = torch.Generator().manual_seed(5)
    down, up = torch.randn(RANK, 4, 1, 2, 2, generator=g), torch.randn(8, RANK, 1, 1, 1, generator=g)
    state = {"patch_embedding.lora_down.weight": down, "patch_embedding.lora_up.weight": up,
             "patch_embedding.alpha": torch.tensor(float(RANK))}
    model = tiny_model()
    expected = model.patch_embedding.weight.detach() + (up.flatten(1) @ down.flatten(1)).view(8, 4, 1, 2, 2)
    apply_loras(model, [(load_lora(save_safetensors(tmp_path, "c.safetensors", state)), 1.0)])
    torch.testing.assert_close(model.patch_embedding.weight.detach(), expected, atol=1e-6, rtol=0)


def test_unmatched_targets_are_reported(tmp_path):
    pairs = factors(6, {**LINEARS, "blocks.7.self_attn.q": (8, 8), "face_adapter.fuser_blocks.0.linear1": (8, 8)})
    state = {**peft_state(pairs, "diffusion_model."), "diffusion_model.some.metadata": torch.zeros(1)}
    report = apply_loras(tiny_model(), [(load_lora(save_safetensors(tmp_path, "u.safetensors", state)), 1.0)])
    assert sorted(report.unmatched["u.safetensors"]) == ["blocks.7.self_attn.q", "face_adapter.fuser_blocks.0.linear1"]
    assert report.ignored_keys["u.safetensors"] == ["diffusion_model.some.metadata"]
    assert "2 targets not in the model" in report.summary()


def test_a_lora_for_another_model_is_refused_with_a_guess(tmp_path):
    g = torch.Generator().manual_seed(7)
    state = {"double_blocks.0.img_attn.qkv.lora_A.weight": torch.randn(RANK, 8, generator=g),
             "double_blocks.0.img_attn.qkv.lora_B.weight": torch.randn(24, RANK, generator=g)}
    lora = load_lora(save_safetensors(tmp_path, "flux.safetensors", state))
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="LoRA flux.safetensors matches no layer of this model; it looks like a Flux"):
        apply_loras(model, [(lora, 1.0)])
    assert_weights(model, before, atol=0)


def test_shape_mismatch_names_the_key_and_changes_nothing(tmp_path):
    good = factors(8, {"blocks.0.self_attn.q": (8, 8)})
    bad = factors(9, {"blocks.1.ffn.0": (8, 16)})  # the model's ffn.0 is [12, 8]
    lora = load_lora(save_safetensors(tmp_path, "m.safetensors", peft_state({**good, **bad}, "diffusion_model.")))
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = r"key 'blocks.1.ffn.0'.*\[16, 8\] delta.*'blocks.1.ffn.0.weight' is \(12, 8\)"
    with pytest.raises(ValueError, match=message):
        apply_loras(model, [(lora, 1.0)])
    assert_weights(model, before, atol=0)
    diff_state = {"diffusion_model.blocks.0.norm3.diff": torch.zeros(9)}
    with pytest.raises(ValueError, match=r"key 'blocks.0.norm3.diff' has shape \(9,\).*'blocks.0.norm3.weight'"):
        apply_loras(model, [(load_lora(save_safetensors(tmp_path, "n.safetensors", diff_state)), 1.0)])


def test_guess_names_diffusers_models_of_other_families(tmp_path):
    state = {"transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(RANK, 8),
             "transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, RANK)}
    with pytest.raises(ValueError, match=r"looks like a diffusers-format \(non-Wan\) LoRA"):
        apply_loras(tiny_model(), [(load_lora(save_safetensors(tmp_path, "x.safetensors", state)), 1.0)])


def test_malformed_and_unsupported_files_are_refused(tmp_path):
    down, up = factors(10, {"blocks.0.self_attn.q": (8, 8)})["blocks.0.self_attn.q"]
    only_down = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": down}
    with pytest.raises(ValueError, match="has no up"):
        load_lora(save_safetensors(tmp_path, "a.safetensors", only_down))
    dora = {**peft_state({"blocks.0.self_attn.q": (down, up)}), "blocks.0.self_attn.q.dora_scale": torch.ones(8, 1)}
    with pytest.raises(ValueError, match="DoRA"):
        load_lora(save_safetensors(tmp_path, "b.safetensors", dora))
    with pytest.raises(ValueError, match="do not share a rank"):
        load_lora(save_safetensors(tmp_path, "c.safetensors", peft_state({"blocks.0.self_attn.q": (down, up.T)})))


def test_stacking_and_undo_in_reverse_order(tmp_path):
    first, second = factors(11, LINEARS), factors(12, {"blocks.0.self_attn.q": (8, 8), "blocks.0.ffn.2": (12, 8)})
    lora1 = load_lora(save_safetensors(tmp_path, "one.safetensors", peft_state(first, "diffusion_model.")))
    lora2 = load_lora(save_safetensors(tmp_path, "two.safetensors", kohya_state(second, 1.0, underscore=True)))
    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    expected = hand_merged(model, first, 1.0)
    for name, (down, up) in second.items():
        expected[f"{name}.weight"] += 0.5 * (1.0 / RANK) * up @ down

    together = tiny_model()
    apply_loras(together, [(lora1, 1.0), (lora2, 0.5)])
    assert_weights(together, expected)

    report1 = apply_loras(model, [(lora1, 1.0)])
    report2 = apply_loras(model, [(lora2, 0.5)])
    assert_weights(model, expected)
    assert applied_loras(model) == [report1, report2]
    with pytest.raises(ValueError, match="reverse order"):
        remove_loras(model, report1)
    remove_loras(model, report2)
    assert_weights(model, hand_merged(tiny_model(), first, 1.0))
    remove_loras(model, report1)
    assert_weights(model, original, atol=0)
    apply_loras(model, [(lora1, 0.3)])
    apply_loras(model, [(lora2, 2.0)])
    remove_all_loras(model)
    assert_weights(model, original, atol=0)
    assert applied_loras(model) == []


def test_set_loras_switches_stacks_and_skips_unchanged_ones(tmp_path):
    first, second = factors(18, LINEARS), factors(19, {"blocks.0.ffn.2": (12, 8)})
    lora1 = load_lora(save_safetensors(tmp_path, "one.safetensors", peft_state(first, "diffusion_model.")))
    lora2 = load_lora(save_safetensors(tmp_path, "two.safetensors", peft_state(second, "diffusion_model.")))
    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    reports = set_loras(model, [(lora1, 1.0), (lora2, 0.5)])
    assert set_loras(model, [(lora1, 1.0), (lora2, 0.5)]) == reports  # unchanged: nothing re-applied
    set_loras(model, [(lora1, 0.25)])
    assert_weights(model, hand_merged(tiny_model(), first, 0.25))
    set_loras(model, [])
    assert_weights(model, original, atol=0)


def test_low_precision_weights_are_merged_in_float32(tmp_path):
    pairs = factors(13, LINEARS)
    lora = load_lora(save_safetensors(tmp_path, "l.safetensors", peft_state(pairs, "diffusion_model.")))
    model = tiny_model(dtype=torch.bfloat16)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for name, (down, up) in pairs.items():
        key = f"{name}.weight"
        expected[key] = (expected[key].float() + 0.9 * up @ down).to(torch.bfloat16)
    report = apply_loras(model, [(lora, 0.9)])
    assert_weights(model, expected, atol=0)
    assert all(v.dtype == torch.bfloat16 for v in model.state_dict().values())
    assert report.originals["blocks.0.self_attn.q.weight"].device.type == "cpu"


def test_merge_without_originals_cannot_be_undone(tmp_path):
    pairs = factors(14, LINEARS)
    lora = load_lora(save_safetensors(tmp_path, "l.safetensors", peft_state(pairs, "diffusion_model.")))
    model = tiny_model()
    report = apply_loras(model, [(lora, 1.0)], keep_originals=False)
    assert report.originals == {}
    with pytest.raises(ValueError, match="cannot be removed"):
        remove_loras(model, report)


def fp8_tiny_model() -> TinyModel:
    model = tiny_model()
    weights = {name: module.weight.detach().clone() for name, module in model.named_modules()
               if isinstance(module, nn.Linear)}
    biases = {name: module.bias for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    swap_linears_to_fp8(model, lambda name: name.startswith("blocks."))
    for name, module in model.named_modules():
        if isinstance(module, FP8Linear):
            module.set_weight(weights[name])
            module.bias = biases[name]
    return model


def test_fp8_layers_keep_an_exact_float_delta(tmp_path):
    pairs = factors(15, LINEARS)
    bias_delta = torch.randn(12, generator=torch.Generator().manual_seed(16))
    state = {**peft_state(pairs, "diffusion_model."), "diffusion_model.blocks.1.ffn.0.diff_b": bias_delta}
    lora = load_lora(save_safetensors(tmp_path, "f.safetensors", state))
    model = fp8_tiny_model()
    keys = set(model.state_dict())
    layer = model.blocks[0].self_attn.q
    fp8_before = layer.weight.detach().clone()
    dequantised = linear_weight(layer, torch.float32)
    bias_before = model.blocks[1].ffn[0].bias.detach().clone()
    video = torch.randn(1, 4, 2, 4, 4)
    before = model(video)

    report = apply_loras(model, [(lora, 0.6)])
    assert isinstance(layer, LoraFP8Linear) and isinstance(layer, FP8Linear)
    assert torch.equal(layer.weight.view(torch.uint8), fp8_before.view(torch.uint8))  # fp8 data untouched
    down, up = pairs["blocks.0.self_attn.q"]
    torch.testing.assert_close(linear_weight(layer, torch.float32), dequantised + 0.6 * up @ down, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.blocks[1].ffn[0].bias.detach(), bias_before + 0.6 * bias_delta)
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), x @ (dequantised + 0.6 * up @ down).T + layer.bias, atol=1e-5, rtol=0)
    assert set(model.state_dict()) == keys
    assert len(report.quantised_entries) == len(LINEARS)

    remove_loras(model, report)
    assert type(layer) is FP8Linear
    assert set(model.state_dict()) == keys
    torch.testing.assert_close(model(video), before, atol=0, rtol=0)

    both = {**peft_state({"blocks.0.self_attn.q": (down, up)}), "blocks.0.self_attn.q.diff": torch.ones(8, 8)}
    report = apply_loras(model, [(load_lora(save_safetensors(tmp_path, "both.safetensors", both)), 0.5)])
    expected = dequantised + 0.5 * up @ down + 0.5
    torch.testing.assert_close(linear_weight(layer, torch.float32), expected, atol=1e-6, rtol=0)
    remove_loras(model, report)
    assert set(model.state_dict()) == keys
    torch.testing.assert_close(model(video), before, atol=0, rtol=0)
