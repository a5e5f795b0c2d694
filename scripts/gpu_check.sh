#!/usr/bin/env bash
# The GPU checks in one run, for a machine with CUDA and torch but not rlgate's other
# dependencies: the `gpu` tests, the GPU core benchmark and the training loop's profile on the
# device. Tables and logs go to $OUT (default: ./gpu_check_out). Within about 9 minutes.
#
# Wheels of what such a machine lacks (gymnasium, minigrid, tyro, popgym and their needs) are
# read from .whl/ when it exists; fill it on a machine with pip (Python 3.12 wheels):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl gymnasium minigrid tyro popgym farama-notifications docstring-parser shtab \
#     typeguard pygame-ce
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/.gpu_pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
# rlgate laid out as the installed package (rlgate/, with envs/ and agents/ inside it)
rm -rf .gpu_pkg && mkdir -p .gpu_pkg
cp -r rlgate .gpu_pkg/rlgate && cp -r envs .gpu_pkg/rlgate/envs && cp -r agents .gpu_pkg/rlgate/agents
export PYTHONPATH="$PWD/.gpu_pkg${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/gpu.txt"
# -P: the checkout's rlgate/ (without envs/ and agents/) must not shadow .gpu_pkg
timeout 150 python3 -P -m pytest -q -m gpu tests 2>&1 | tee "$OUT/gpu_tests.txt"
timeout 150 python3 scripts/bench_cores.py --device cuda --batch 256 1024 --hidden 256 \
  --seq 64 --cores lstm ur-lstm gru ur-gru --rounds 3 2>&1 | tee "$OUT/bench_cores_cuda.txt"
timeout 150 python3 scripts/bench_loop.py --device cuda --recipes memory-s7 passive-match \
  --num-envs 64 1024 --updates 3 2>&1 | tee "$OUT/bench_loop_cuda.txt"
timeout 45 python3 scripts/bench_envs.py --quick --tasks rlgate/MemoryS7-v0 \
  rlgate/popgym-RepeatPreviousEasy-v0 rlgate/popgym-BattleshipEasy-v0 2>&1 \
  | tee "$OUT/bench_envs_cuda.txt"
rm -rf .gpu_pkg
