#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py): extraction, training and generation at full size, results under $OUT.
#   bash bench/gpu.sh              # on the GPU machine (≤ 8 min on one H200); make gpu-bench
#   bash bench/gpu.sh --rehearse   # on any CPU, tiny sizes: the same script end to end (tests/test_gpu_bench.py)
# Wheels in .whl/ (scripts/gpu_wheels.sh, carried beside the repository) are installed first, from the folder,
# into a temporary directory, when this Python lacks them; PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import anndata, zarr, numcodecs, importlib.util as u; assert u.find_spec('scgpt')" 2>/dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())"
# the whole output also in $OUT/gpu.log: a device run returns only the end of what it printed
"$PY" -m bench.gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
