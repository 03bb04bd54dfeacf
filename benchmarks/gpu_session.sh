#!/usr/bin/env bash
# Every GPU check of the pack in one run on one GPU (about 9 minutes on an H200), each part under its own time limit:
#   1. the CUDA test layer (pytest -m cuda),
#   2. the speed table (benchmarks/gpu_table.py: ours in every configuration and the official step, same run),
#   3. the cost of the sequence-parallel worker path on one GPU (benchmarks/distributed_overhead.py).
# Logs go to $OUT (default benchmarks/out). Run from the repository root:
#   bash benchmarks/gpu_session.sh
# Wheels the GPU machine lacks (sageattention, gguf, diffusers and importlib_metadata for the official model) are
# installed from .whl/ when that folder exists; the official source tree and official_step_bench.py are read from
# .official/ (see benchmarks/README.md, "Commands for a GPU run").
set -u
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"

echo "== 1. CUDA test layer"
timeout "${CUDA_TESTS_S:-200}" python3 -m pytest -m cuda -s -q -p no:cacheprovider tests/test_cuda_*.py \
  tests/test_fp8_matmul.py tests/test_model_handle.py 2>&1 | tee "$out/cuda_tests.log" \
  | grep -E "CUDA figure|figure|passed|failed|FAILED|Error|error:" | tail -60

echo "== 2. speed table"
timeout "${TABLE_S:-300}" python3 benchmarks/gpu_table.py --official-bench .official/official_step_bench.py \
  --official-ref .official 2>&1 | tee "$out/gpu_table.log" | grep -vE "^\s*$" | tail -40

echo "== 3. worker path on one GPU"
timeout "${DIST_S:-70}" python3 benchmarks/distributed_overhead.py 2>&1 | tee "$out/distributed.log" | tail -5
