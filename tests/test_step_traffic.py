"""The eager DiT step's memory traffic outside the matrix products (benchmarks/step_traffic.py, counted on meta).

Those kernels are bandwidth-bound, so their bytes set their share of the step time on any GPU. The budgets pin the
fused forward: the earlier forward moved 2,558 GB in 3,620 kernels per 832x480x77 step at the 14B size.
"""
import pytest
import torch

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def step_traffic():
    return load_benchmark("step_traffic")


def test_the_counter_counts_each_tensor_in_and_out_once(step_traffic):
    x = torch.empty(1000, 64, dtype=torch.bfloat16, device="meta")
    scale = torch.empty(1, 64, device="meta")
    counter = step_traffic.TrafficCounter()
    with counter:
        x.float()  # 2 bytes in, 4 out per element
        torch.addcmul(scale, x, scale)  # x in (2), the broadcast row once (2 * 256 bytes), 4 out
        x.t()  # a view: nothing moves
        torch.empty(10, device="meta")  # an allocation: nothing moves
    assert counter.calls == {"_to_copy": 1, "addcmul": 1}
    assert counter.other["_to_copy"] == 64000 * 6
    assert counter.other["addcmul"] == 64000 * 6 + 2 * 256


def test_fused_calls_count_as_one_kernel(step_traffic):
    x = torch.empty(10, 64, dtype=torch.bfloat16, device="meta")
    counter = step_traffic.TrafficCounter()
    with counter, step_traffic.FusedCalls(counter):
        torch.nn.functional.rms_norm(x, (64,), eps=1e-6)
    assert counter.calls == {"rms_norm": 1} and counter.other["rms_norm"] == 640 * 4


def test_the_14b_step_stays_within_its_traffic_budget(step_traffic):
    result = step_traffic.measure(832, 480, 77, torch.bfloat16)
    assert result["tokens"] == 32760 and result["attention_calls"] == 40 * 3 + 8
    assert result["other_gb"] <= 1150, result["top"]
    assert result["other_kernels"] <= 1500, result["top"]
