#!/usr/bin/env bash
# The one GPU check for a lent device machine: installs nothing, builds the extension in place
# against that machine's torch, checks every GPU backend against backend "torch", times them
# and prints a table (also $OUT/gpu_check.md). About 8 minutes at most:
#   run: bash benchmarks/gpu_check.sh        (timeout_s ~540 leaves room for one rerun)
set -uo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export OST_KERNELS_CUDA_ARCHS=${OST_KERNELS_CUDA_ARCHS:-90}
PY=${PYTHON:-python3}
# The device image lacks open_clip (for the OST training-step check); `make gpu-wheels` here puts
# its wheels in .whl/, which the run carries (carry: [".whl"]) and which are unpacked to /tmp.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ost_site .whl/*.whl \
    && export PYTHONPATH=/tmp/ost_site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
start=$(date +%s)
if ! $PY setup.py -q build_ext --inplace > /tmp/ost_build.log 2>&1; then
  echo "extension build failed (last lines below); the Triton checks still run"
  tail -n 20 /tmp/ost_build.log
fi
echo "build: $(( $(date +%s) - start )) s"
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} $PY benchmarks/gpu_check.py --budget "${GPU_CHECK_BUDGET:-330}"
