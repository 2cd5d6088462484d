#!/usr/bin/env bash
# The one GPU check for a lent device machine (see benchmarks/gpu_check.py for what it checks).
# Installs nothing. The CUDA extension builds in the background (sm_90 only) while the Triton
# checks run; every line is printed as soon as it is known, so a run cut short at its time
# limit still returns what it did. Under 6 minutes on a fresh H200 machine is the aim:
#   run: bash benchmarks/gpu_check.sh        (timeout_s ~420 leaves room for one rerun)
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
BUILD_LOG=/tmp/ost_build.log
rm -f "$BUILD_LOG" "$BUILD_LOG.status"
( MAX_JOBS=8 $PY setup.py -q build_ext --inplace > "$BUILD_LOG" 2>&1; echo $? > "$BUILD_LOG.status" ) &
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} $PY -u benchmarks/gpu_check.py --build-log "$BUILD_LOG" \
  --budget "${GPU_CHECK_BUDGET:-150}"
status=$?
wait
exit $status
