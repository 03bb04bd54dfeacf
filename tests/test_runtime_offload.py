"""Block offloading on CPU: identical outputs, the prefetch schedule, residency bounds, fp8 layers, compile wiring."""
import copy

import pytest
import torch
from torch import nn

from wan_animate.runtime.compile import compile_blocks, is_compiled, uncompile_blocks
from wan_animate.runtime.offload import BlockOffloader, OffloadSchedule, PackedBlock, enable_block_offload


class ScaledFp8Linear(nn.Module):
    """Stand-in for the DiT's fp8 layers: an fp8 weight parameter plus a 0-dim scale buffer."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        scale = weight.abs().max() / 448
        self.weight = nn.Parameter((weight / scale).to(torch.float8_e4m3fn), requires_grad=False)
        self.register_buffer("scale", scale.reshape(()))

    def forward(self, x):
        return x @ (self.weight.float() * self.scale).t()


class Block(nn.Module):
    def __init__(self, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.norm = nn.LayerNorm(dim)
        self.lin = nn.Linear(dim, dim)
        self.fp8 = ScaledFp8Linear(torch.randn(dim, dim, generator=g) / dim**0.5)
        self.register_buffer("gate", torch.rand(dim, generator=g))
        self.register_buffer("enabled", torch.tensor([True, False]))
        nn.init.normal_(self.lin.weight, generator=g)

    def forward(self, x):
        return x + self.gate * self.fp8(torch.tanh(self.lin(self.norm(x)))) * self.enabled[0]


class TinyModel(nn.Module):
    def __init__(self, dim=8, layers=6):
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(Block(dim, seed=i) for i in range(layers))
        self.register_buffer("bias", torch.full((dim,), 0.5))

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return x + self.bias


def run(model, steps=2):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        return [model(torch.randn(3, 8, generator=g)) for _ in range(steps)]


@pytest.mark.parametrize("offload_count", [0, 1, 3, 6])
@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_outputs_identical_with_offloading(offload_count, prefetch):
    reference = TinyModel()
    expected = run(reference)
    model = copy.deepcopy(reference)
    offloader = enable_block_offload(model, "cpu", offload_count, prefetch)
    for got, want in zip(run(model), expected):
        assert torch.equal(got, want)
    assert offloader.resident_indices == []  # nothing offloaded stays on the device between forwards


def test_prefetch_schedule_events_last_blocks_offloaded():
    events = []
    model = TinyModel(layers=6)
    offloader = BlockOffloader(model.blocks, "cpu", offload_count=3, prefetch=1, on_event=lambda *e: events.append(e))
    run(model, steps=2)
    first = [("upload", 3), ("upload", 4), ("release", 3), ("wait", 3), ("upload", 5), ("release", 4), ("release", 5)]
    # the next forward first waits for the previous forward's released buffers (at most 2 live at once)
    second = [("wait", 4), ("upload", 3), ("wait", 5), ("upload", 4)] + first[2:]
    assert events == first + second
    assert offloader.stats.on_demand == 0  # every copy was issued ahead of its block
    assert offloader.stats.uploads == 6 and offloader.stats.peak_resident == 2


def test_all_blocks_offloaded_first_block_loads_on_demand():
    events = []
    model = TinyModel(layers=4)
    offloader = BlockOffloader(model.blocks, "cpu", offload_count=4, prefetch=2, on_event=lambda *e: events.append(e))
    run(model, steps=1)
    assert events[:3] == [("load", 0), ("upload", 1), ("upload", 2)]
    assert offloader.stats.on_demand == 1
    assert offloader.stats.peak_resident == offloader.schedule.max_resident_offloaded == 3


@pytest.mark.parametrize("layers, count, prefetch", [(6, 3, 0), (6, 6, 1), (8, 5, 3), (5, 2, 4)])
def test_device_residency_never_exceeds_prefetch_plus_one(layers, count, prefetch):
    model = TinyModel(layers=layers)
    live = [0]  # device buffers on the device or released but not yet known finished

    def track(kind, index):
        live[0] += {"upload": 1, "load": 1, "wait": -1, "release": 0}[kind]
        assert live[0] <= min(count, prefetch + 1), (kind, index)

    offloader = BlockOffloader(model.blocks, "cpu", count, prefetch, on_event=track)
    residency = []
    for block in model.blocks:
        block.register_forward_hook(lambda *a: residency.append(len(offloader.resident_indices)))
    run(model, steps=2)
    assert max(residency) <= min(count, prefetch + 1)
    assert offloader.stats.peak_resident == offloader.schedule.max_resident_offloaded
    assert offloader.stats.on_demand == 2 * (count if prefetch == 0 else int(count == layers))


def test_offloaded_block_computes_on_a_copy_and_parks_on_the_host_buffer():
    model = TinyModel(layers=3)
    offloader = BlockOffloader(model.blocks, "cpu", offload_count=1)
    block, packed = model.blocks[2], offloader.packed[2]
    host_ptrs = {id(t): t.data_ptr() for t in packed.tensors}
    seen = []
    block.register_forward_pre_hook(lambda m, a: seen.append(m.lin.weight.data_ptr()))  # runs after the offloader's
    run(model, steps=1)
    assert seen[0] != host_ptrs[id(block.lin.weight)]
    assert all(t.data_ptr() == host_ptrs[id(t)] for t in packed.tensors)
    assert block.fp8.weight.dtype == torch.float8_e4m3fn and block.fp8.scale.shape == ()
    assert offloader.offloaded_bytes == packed.nbytes


def test_packed_block_keeps_every_parameter_and_buffer():
    block = Block(8, seed=3)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    packed = PackedBlock(block)
    assert len(packed.tensors) == len(before)  # params + buffers, fp8 weight and scale included
    for name, value in block.state_dict().items():
        assert value.dtype == before[name].dtype and value.shape == before[name].shape
        assert torch.equal(value.reshape(-1).view(torch.uint8), before[name].reshape(-1).view(torch.uint8)), name
    assert all(offset % 64 == 0 for offset, _ in packed.layout)


def test_interrupted_forward_is_recovered_by_release_all():
    reference = TinyModel()
    expected = run(reference)
    model = copy.deepcopy(reference)
    offloader = enable_block_offload(model, "cpu", offload_count=3)
    failing = model.blocks[4].register_forward_pre_hook(lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(model, steps=1)
    assert offloader.resident_indices == [4, 5]
    offloader.release_all()
    assert offloader.resident_indices == []
    failing.remove()
    for got, want in zip(run(model), expected):
        assert torch.equal(got, want)


def test_remove_detaches_hooks():
    events = []
    model = TinyModel(layers=4)
    offloader = BlockOffloader(model.blocks, "cpu", 2, on_event=lambda *e: events.append(e))
    offloader.remove()
    run(model, steps=1)
    assert events == []


@pytest.mark.parametrize(
    "layers, count, prefetch, index, targets",
    [(10, 4, 1, 5, [6]), (10, 4, 2, 4, [6]), (10, 4, 1, 9, []), (10, 10, 3, 0, [1, 2, 3]), (10, 0, 2, 3, [])],
)
def test_schedule_prefetch_targets(layers, count, prefetch, index, targets):
    schedule = OffloadSchedule(layers, count, prefetch)
    assert schedule.prefetch_targets(index) == targets
    assert [i for i in range(layers) if schedule.is_offloaded(i)] == list(range(layers - count, layers))


def test_schedule_rejects_bad_settings():
    with pytest.raises(ValueError, match="offload_count is 11; expected 0..10"):
        OffloadSchedule(10, 11)
    with pytest.raises(ValueError, match="prefetch is -1"):
        OffloadSchedule(10, 2, -1)
    with pytest.raises(TypeError, match="ModuleList `blocks`"):
        enable_block_offload(nn.Linear(2, 2), "cpu", 1)


def test_compiled_blocks_keep_offload_hooks_and_outputs():
    reference = TinyModel(layers=4)
    expected = run(reference)
    model = copy.deepcopy(reference)
    events = []
    BlockOffloader(model.blocks, "cpu", 2, on_event=lambda *e: events.append(e))
    compile_blocks(model.blocks, backend="eager")
    assert all(is_compiled(b) for b in model.blocks)
    for got, want in zip(run(model), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert ("upload", 2) in events and ("release", 3) in events
    with pytest.raises(RuntimeError, match="compiled twice"):
        compile_blocks(model.blocks, backend="eager")
    uncompile_blocks(model.blocks)
    assert not any(is_compiled(b) for b in model.blocks)


def fp8_blocks(model: nn.Module) -> nn.Module:
    """The DiT's block Linears replaced by FP8Linear layers holding the quantised weights."""
    from wan_animate.runtime.fp8 import FP8Linear

    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and name.startswith("blocks."):
            layer = FP8Linear(module.in_features, module.out_features, module.bias is not None)
            layer.set_weight(module.weight.data)
            layer.bias.data.copy_(module.bias.data)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    return model


@pytest.mark.parametrize("fp8, prefetch", [(False, 1), (False, 2), (True, 1)])
def test_tiny_dit_outputs_identical_with_offloading(fp8, prefetch):
    helpers_dit = pytest.importorskip("helpers_dit")
    reference = helpers_dit.build_tiny_dit(seed=3)
    if fp8:
        fp8_blocks(reference)
    inputs = helpers_dit.tiny_inputs(helpers_dit.tiny_config())
    expected = helpers_dit.run_dit(reference, inputs)
    model = copy.deepcopy(reference)
    events = []
    offloader = enable_block_offload(model, "cpu", 4, prefetch, on_event=lambda *e: events.append(e))
    if fp8:
        assert any(t.dtype == torch.float8_e4m3fn for t in offloader.packed[5].tensors)
        assert any(t.shape == () and t.dtype == torch.float32 for t in offloader.packed[5].tensors)  # scales
    got = helpers_dit.run_dit(model, inputs)
    assert torch.equal(got, expected)
    assert [i for kind, i in events if kind == "release"] == [2, 3, 4, 5]
    assert offloader.stats.on_demand == 0 and offloader.resident_indices == []
