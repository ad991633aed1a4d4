#!/usr/bin/env bash
# The GPU check (README.md, "Speed"): on a machine with a CUDA device, runs the gpu-marked tests (`pytest -m gpu`:
# device draws, ONNX on the process's GPU, auto batch size with the metrics' buffers, CPU/GPU score agreement, no
# host synchronisation inside the metrics) and `make bench`'s metric benchmark on the GPU (suite vs floor vs
# Quantus 0.6.0, bundled ResNet-8 and resnet18_cifar, --batch-size auto), and writes both, with the GPU's name,
# into one Markdown file.
#
#   bench/gpu_check.sh [OUT_DIR]        # default build/gpu_check; PY=/path/to/python to use another interpreter
#
# Extra bench options go in BENCH_ARGS (e.g. BENCH_ARGS="--skip-quantus" to save time). Exit status: that of the
# tests (the bench's tables are written even when a test fails).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu_check}
PY=${PY:-.venv/bin/python}
BENCH_ARGS=${BENCH_ARGS:-}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing to check" >&2
  exit 2
fi
GPU=$("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)')")
VERSIONS=$("$PY" -c "import torch, onnxruntime as o; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), onnxruntime {o.__version__} {o.get_available_providers()}')")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
TESTS_CMD=("$PY" -m pytest -m gpu -q -rs -p no:cacheprovider)
# shellcheck disable=SC2206  # BENCH_ARGS is a list of options, split on purpose
BENCH_CMD=("$PY" bench/bench_metrics.py --device cuda --batch-size auto --skip-cli --out "$OUT" $BENCH_ARGS)

echo "== gpu_check on $GPU → $REPORT" >&2
"${TESTS_CMD[@]}" > "$OUT/pytest_gpu.txt" 2>&1
TESTS_RC=$?
"${BENCH_CMD[@]}" > "$OUT/bench.txt" 2> "$OUT/bench.log"
BENCH_RC=$?

{
  echo "# GPU check"
  echo
  echo "- GPU: $GPU"
  echo "- software: $VERSIONS"
  echo "- commit: $COMMIT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "## \`${TESTS_CMD[*]}\` (exit $TESTS_RC)"
  echo
  echo '```'
  tail -n 40 "$OUT/pytest_gpu.txt"
  echo '```'
  echo
  echo "## \`${BENCH_CMD[*]}\` (exit $BENCH_RC)"
  echo
  echo '```'
  cat "$OUT/bench.txt"
  echo '```'
} > "$REPORT"
echo "== wrote $REPORT (tests exit $TESTS_RC, bench exit $BENCH_RC)" >&2
exit "$TESTS_RC"
