#!/usr/bin/env bash
# Prepare, on a machine with network access, the wheels `make gpu-check` installs on a GPU machine
# without one (Python 3.12, x86-64, PyTorch/Triton already there): the suite's pure-Python
# dependencies the GPU image lacks, and mamba-ssm built WITHOUT its CUDA extensions
# (MAMBA_SKIP_CUDA_BUILD=TRUE: its Mamba-2 SSD kernels are Triton code, compiled at run time).
# flash-attn and flashfftconv have no wheels on the package index for that machine's CUDA 13 /
# PyTorch 2.11 and need nvcc builds of many minutes, so they are left out; their tests then skip
# with the reason. Output: .whl/ (ignored by git; carried to the GPU machine).
#   make gpu-wheels            (= bash scripts/gpu_wheels.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${WHEELS:-.whl}
mkdir -p "$OUT"
lock() { grep -i "^$1==" requirements.lock | head -1; }
# pure-Python wheels at the lock's versions
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d "$OUT" "$(lock hydra-core)" "$(lock omegaconf)"
# antlr4-python3-runtime 4.9.3 (hydra's parser runtime) is published as a source archive only
"$PY" -m pip wheel -q --no-deps -w "$OUT" "$(lock antlr4-python3-runtime)"
# mamba-ssm without its CUDA build: a py3-none-any wheel holding the Triton kernels
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "$PY" -m pip wheel -q --no-deps --no-build-isolation \
  -w "$OUT" "mamba-ssm==${MAMBA_SSM_VERSION:-2.2.4}"
ls -la "$OUT"
echo "wheels ready in $OUT: carry it to the GPU machine and run: bash scripts/gpu_check.sh"
