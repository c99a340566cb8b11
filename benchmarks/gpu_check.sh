#!/usr/bin/env bash
# The 'torch' backend's GPU check (issue 12), for a session lent a CUDA machine.
#
#   bash benchmarks/gpu_check.sh          (from the repository root; under 5 minutes on an H200)
#
# 1. the machine: GPU, driver, torch and CUDA versions;
# 2. tests/test_torch_backend.py, whose CUDA test runs there (CUDA's answers equal the CPU
#    backend's to 1e-9), if pytest and hypothesis are importable;
# 3. benchmarks/bench_torch.py --device cuda on noisy l_inf and certified exact
#    20 x 250 x 600 (batches of 100 and 1000), each against a CPU reference measured in the
#    same run (the CPU engines on the first 100 samples of each batch).
# Everything goes to stdout and to $OUT/gpu_check.txt (OUT defaults to ./gpu_check_out).
# It uses the first python that imports torch ($PYTHON if set); layerinv runs from src/
# (PYTHONPATH), and `pip install -e .` is tried only if layerinv's dependencies are missing.
# DEVICE, BATCHES and REFERENCE override the benchmark's (a dry run on CPU:
# DEVICE=cpu BATCHES=8 REFERENCE=8 bash benchmarks/gpu_check.sh).
set -u
DEVICE="${DEVICE:-cuda}"
BATCHES="${BATCHES:-100 1000}"
REFERENCE="${REFERENCE:-100}"
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.txt") 2>&1

PY=""
for candidate in "${PYTHON:-}" python3 python /usr/bin/python3 /opt/conda/bin/python; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c "import torch" >/dev/null 2>&1; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no python here imports torch"
    exit 1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import layerinv" >/dev/null 2>&1; then
    echo "gpu_check: layerinv does not import from src/; trying pip install -e ."
    "$PY" -m pip install -q -e . || echo "gpu_check: pip install -e . failed"
fi
if ! "$PY" -c "import layerinv"; then
    echo "gpu_check: layerinv does not import (above: the missing module)"
    exit 1
fi

echo "== machine ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" - <<'EOF'
import torch
print(f"python torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}")
if torch.cuda.is_available():
    print("device 0:", torch.cuda.get_device_name(0))
EOF

echo "== tests/test_torch_backend.py"
if "$PY" -c "import pytest, hypothesis" >/dev/null 2>&1; then
    timeout 90 "$PY" -m pytest -q -x -p no:cacheprovider -rs tests/test_torch_backend.py \
        || echo "gpu_check: the tests FAILED or timed out (status $?)"
else
    echo "gpu_check: pytest or hypothesis missing; tests skipped"
fi

echo "== benchmarks/bench_torch.py --device $DEVICE"
# shellcheck disable=SC2086  # BATCHES is a list of sizes
timeout 180 "$PY" benchmarks/bench_torch.py --device "$DEVICE" --batch $BATCHES \
    --reference "$REFERENCE" \
    || echo "gpu_check: the benchmark FAILED or timed out (status $?)"
echo "== gpu_check done"
