#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py says what it checks): about 4 minutes on an H100 / H200.
#   bash benchmarks/gpu_check.sh [--out DIR]   writes DIR/gpu_check.json and DIR/gpu_check.md
#                                              (DIR: benchmarks/out/)
#   bash benchmarks/gpu_check.sh --dry-run     the same flow on the CPU, tiny shapes (a test runs it)
# Installs nothing into the environment. The CUDA extension builds in the background (for this
# GPU's architecture only) while the Triton rows run; the dry run builds the CUDA code for the CPU
# instead (tests/helpers/cuda_emulation, cached under build/). On a lent device machine:
#   run(command="bash benchmarks/gpu_check.sh --out $OUT", timeout_s=330, carry=[".whl"])
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT_DIR=benchmarks/out
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out)
      [ $# -ge 2 ] || { echo "gpu_check.sh: error: --out needs a folder" >&2; exit 2; }
      OUT_DIR=$2; shift ;;
    --out=*) OUT_DIR=${1#--out=} ;;
    *) echo "gpu_check.sh: error: unknown argument '$1' (expected --dry-run or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR" || { echo "gpu_check.sh: error: cannot create --out folder '$OUT_DIR'" >&2; exit 2; }
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
BUILD_LOG=$(mktemp -d)/build.log
if [ "$DRY" = 1 ]; then
  # The CUDA fallback's code compiled for the CPU, as the tests build it (torch cpp_extension).
  BUILD=("$PY" -c 'import sys
from tests.helpers.cuda_emulation.backend import module
m = module()
print(m)
sys.exit(isinstance(m, Exception))')
else
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  # This GPU's architecture only (e.g. 9.0 -> 90): half the compile time of the default 80;90.
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ')
  export OST_KERNELS_CUDA_ARCHS=${OST_KERNELS_CUDA_ARCHS:-${ARCH:-90}}
  # The device image lacks open_clip (the training-step row): `make gpu-wheels` here puts its
  # wheels in .whl/, which the run carries and which are unpacked to a temporary folder.
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    SITE=$(mktemp -d)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
      && export PYTHONPATH=$PYTHONPATH:$SITE
  fi
  BUILD=(env MAX_JOBS=8 "$PY" setup.py -q build_ext --inplace)
fi
# In its own session (setsid), so that the whole build can be stopped if the check ends first.
setsid bash -c '"$@" > "$0" 2>&1; echo $? > "$0.status"' "$BUILD_LOG" "${BUILD[@]}" &
BUILD_PID=$!
ARGS=(--out "$OUT_DIR" --build-log "$BUILD_LOG")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
$PY -u benchmarks/gpu_check.py "${ARGS[@]}"
status=$?
[ -f "$BUILD_LOG.status" ] || kill -- -"$BUILD_PID" 2>/dev/null
wait
exit $status
