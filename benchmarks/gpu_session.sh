#!/usr/bin/env bash
# Every GPU check of the pack on one GPU, in three parts that each fit one device call (estimated 5, 7 and 4 minutes
# on an H200; each step has its own time limit, so a part always ends and prints what it measured):
#   bash benchmarks/gpu_session.sh core     # CUDA test layer + the 832x480x77 table (official step in the same run)
#   bash benchmarks/gpu_session.sh 720p     # the 1280x720x77 table (official step in the same run)
#   bash benchmarks/gpu_session.sh segment  # finished segments with and without step caching, VAE vs the official,
#                                           # the worker path with FSDP2-sharded weights
# Logs go to $OUT (default benchmarks/out). Run from the repository root.
# Wheels the GPU machine lacks (sageattention, gguf, diffusers and importlib_metadata for the official model) are
# installed from .whl/ when that folder exists; the official source tree and official_step_bench.py are read from
# .official/ (see benchmarks/README.md, "Commands for a GPU run").
set -u
part=${1:-core}
case $part in core|720p|segment) ;; *) echo "unknown part '$part'; expected core, 720p or segment" >&2; exit 2 ;; esac
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
official=(--official-bench .official/official_step_bench.py --official-ref .official)

case $part in
core)
  echo "== CUDA test layer"
  timeout "${CUDA_TESTS_S:-180}" python3 -m pytest -m cuda -s -q -p no:cacheprovider tests/test_cuda_*.py \
    tests/test_fp8_matmul.py tests/test_model_handle.py 2>&1 | tee "$out/cuda_tests.log" \
    | grep -E "CUDA figure|figure|passed|failed|FAILED|Error|error:" | tail -60
  echo "== speed table, 832x480x77"
  timeout "${TABLE_S:-380}" python3 benchmarks/gpu_table.py --sizes 832x480 "${official[@]}" 2>&1 \
    | tee "$out/gpu_table_480p.log" | grep -vE "^\s*$" | tail -40
  ;;
720p)
  echo "== speed table, 1280x720x77"
  timeout "${TABLE_S:-560}" python3 benchmarks/gpu_table.py --sizes 1280x720 "${official[@]}" 2>&1 \
    | tee "$out/gpu_table_720p.log" | grep -vE "^\s*$" | tail -40
  ;;
segment)
  echo "== one 77-frame segment at 832x480, 10 steps, step caching off and at 0.05"
  for threshold in 0 0.05; do
    timeout "${SEGMENT_S:-110}" python3 benchmarks/segment_time.py --steps 10 --cache-threshold "$threshold" 2>&1 \
      | tee -a "$out/segment.log" | tail -1
  done
  echo "== VAE, ours against the official, 832x480x77, float32 (ours untiled and tiled)"
  vae=(--ref .official --device cuda --frames 77 --width 832 --height 480)
  for impl in "--impl ours" "--impl official" "--impl ours --tiled"; do
    timeout "${VAE_S:-90}" python3 benchmarks/vae_vs_official.py $impl "${vae[@]}" 2>&1 | tee -a "$out/vae.log" | tail -1
  done
  echo "== worker path on one GPU with FSDP2-sharded weights (replicated: measured, benchmarks/README.md)"
  timeout "${DIST_S:-80}" python3 benchmarks/distributed_overhead.py --shard-weights on 2>&1 \
    | tee "$out/distributed.log" | tail -3
  ;;
esac
