"""Pinned host memory of block offloading, with the pinning call mocked: exact sizes, budget, fallback, release."""
import copy
import logging

import pytest
import torch

from test_runtime_offload import TinyModel, run
from wan_animate.runtime import offload
from wan_animate.runtime.offload import BlockOffloader, enable_block_offload
from wan_animate.runtime.pinned import PinningPolicy


class FakePinner:
    """Records registered (pointer, size) pairs like cudaHostRegister would; `fail` makes register refuse."""

    def __init__(self, fail: str | None = None):
        self.registered: dict[int, int] = {}
        self.calls: list[int] = []
        self.fail = fail

    def register(self, buffer):
        self.calls.append(buffer.nbytes)
        if self.fail:
            return self.fail
        assert buffer.data_ptr() not in self.registered, "registered twice"
        self.registered[buffer.data_ptr()] = buffer.nbytes
        return None

    def unregister(self, buffer):
        assert self.registered.pop(buffer.data_ptr()) == buffer.nbytes


def offloaded(model, count=3, **kwargs):
    pinner = kwargs.pop("pinner", FakePinner())
    return enable_block_offload(model, "cpu", count, pinner=pinner, **kwargs), pinner


def test_each_offloaded_block_is_pinned_once_at_its_exact_size():
    model = TinyModel(dim=24, layers=6)
    offloader, pinner = offloaded(model, pinning=PinningPolicy())
    sizes = sorted(p.nbytes for p in offloader.packed.values())
    assert sorted(pinner.registered.values()) == sizes and len(sizes) == 3
    assert sizes[0] & (sizes[0] - 1) != 0  # not rounded up to a power of two
    assert {p.host.data_ptr() for p in offloader.packed.values()} == set(pinner.registered)
    assert offloader.pinned.pinned_bytes == offloader.offloaded_bytes


def test_remove_unpins_keeps_the_weights_and_a_new_offloader_reuses_the_buffers():
    reference = TinyModel()
    expected = run(reference)
    model = copy.deepcopy(reference)
    first, pinner = offloaded(model)
    pointers = {i: p.host.data_ptr() for i, p in first.packed.items()}
    first.remove()
    assert pinner.registered == {}
    for got, want in zip(run(model), expected):  # weights now live in the unpinned buffers
        assert torch.equal(got, want)
    second, pinner = offloaded(model)
    assert all(p.reused for p in second.packed.values())  # no second copy of the blocks in host memory
    assert {i: p.host.data_ptr() for i, p in second.packed.items()} == pointers
    assert set(pinner.registered) == set(pointers.values())
    for got, want in zip(run(model), expected):
        assert torch.equal(got, want)
    second.remove()
    model.blocks[5].lin.weight.data = model.blocks[5].lin.weight.data.clone()  # e.g. a LoRA replaced a tensor
    third, _ = offloaded(model)
    assert [third.packed[i].reused for i in (3, 4, 5)] == [True, True, False]


def test_budget_leaves_the_rest_pageable_with_one_log_line(caplog):
    reference = TinyModel()
    expected = run(reference)
    model = copy.deepcopy(reference)
    block = offload.PackedBlock(copy.deepcopy(model.blocks[0])).nbytes
    with caplog.at_level(logging.WARNING, logger="wan_animate.runtime.pinned"):
        offloader, pinner = offloaded(model, pinning=PinningPolicy(budget_bytes=block + block // 2))
    assert len(pinner.registered) == 1 and offloader.pinned.pageable_bytes == 2 * block
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "pinned-memory budget" in messages[0] and "pageable" in messages[0]
    for got, want in zip(run(model), expected):
        assert torch.equal(got, want)


def test_disabled_pinning_pins_nothing_and_says_nothing(caplog):
    model = TinyModel()
    with caplog.at_level(logging.WARNING):
        offloader, pinner = offloaded(model, pinning=PinningPolicy(enabled=False))
    assert pinner.calls == [] and caplog.records == []
    assert offloader.pinned.pageable_bytes == offloader.offloaded_bytes


def test_failed_pinning_falls_back_to_pageable_memory(caplog):
    reference = TinyModel()
    expected = run(reference)
    model = copy.deepcopy(reference)
    with caplog.at_level(logging.WARNING, logger="wan_animate.runtime.pinned"):
        offloader, pinner = offloaded(model, pinner=FakePinner(fail="cudaHostRegister returned error 2"))
    assert len(pinner.calls) == 3 and pinner.registered == {}
    assert "cudaHostRegister returned error 2" in caplog.text
    for got, want in zip(run(model), expected):
        assert torch.equal(got, want)
    offloader.remove()


def test_failure_while_packing_unpins_what_was_pinned(monkeypatch):
    model = TinyModel()
    real = offload.PackedBlock
    made = []

    def packed_block(module):
        if len(made) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096 bytes")
        made.append(real(module))
        return made[-1]

    monkeypatch.setattr(offload, "PackedBlock", packed_block)
    pinner = FakePinner()
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        BlockOffloader(model.blocks, "cpu", 3, pinner=pinner)
    assert len(pinner.calls) == 2 and pinner.registered == {}
    assert all(not block._forward_pre_hooks for block in model.blocks)


def test_pinning_policy_follows_comfyui(monkeypatch):
    from nodes import comfy_compat

    class ModelManagement:
        MAX_PINNED_MEMORY = -1
        TOTAL_PINNED_MEMORY = 0

    monkeypatch.setattr(comfy_compat, "model_management", ModelManagement)
    assert comfy_compat.pinning_policy() == PinningPolicy(enabled=False)  # --disable-pinned-memory
    ModelManagement.MAX_PINNED_MEMORY, ModelManagement.TOTAL_PINNED_MEMORY = 10 * 2**30, 3 * 2**30
    assert comfy_compat.pinning_policy() == PinningPolicy(budget_bytes=7 * 2**30)
    monkeypatch.setattr(comfy_compat, "model_management", None)
    assert comfy_compat.pinning_policy() == PinningPolicy()
