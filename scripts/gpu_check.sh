#!/usr/bin/env bash
# The GPU check: one command for a GPU machine with no network (`make gpu-check` calls this script; run it
# directly where make is missing). It uses the system python3 as is -- no venv, nothing installed or
# downloaded -- and needs torch with CUDA, nvcc, triton, torch_geometric, pytest, pytest-benchmark, hypothesis.
#
#   1. build the extension in place with its CUDA kernels (MAX_JOBS=16, TORCH_CUDA_ARCH_LIST=9.0 by default);
#   2. run every gpu-marked test (CUDA and Triton kernels against the CPU path, engines on CUDA tensors);
#   3. run the short benchmark (benchmarks/gpu_bench.py: full inference, aggregation at 1M nodes / 20M edges,
#      batched latency at batch 512);
# and write benchmarks/out/gpu_check.json and .md. Every step runs under its own time limit (in all about
# 8 minutes at most); a step that fails or runs out of time is recorded and the next one runs. Exit status:
# 0 when every step passed, 1 when one failed, 2 when there is no GPU (checked first: nothing is built).
#
# Environment: PYTHON (python3), GPU_CHECK_OUT (benchmarks/out/gpu_check), GPU_CHECK_BUILD_TIMEOUT (200 s),
# GPU_CHECK_TEST_TIMEOUT (120 s); the benchmark stages have their own limits (benchmarks/gpu_bench.py).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-benchmarks/out/gpu_check}
BUILD_TIMEOUT=${GPU_CHECK_BUILD_TIMEOUT:-200}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-120}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's gnnaccel, not an installed one

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu-check: $PY not found (set PYTHON to the interpreter with a CUDA build of torch)" >&2
  exit 2
fi
if ! torch_error=$("$PY" -c "import torch" 2>&1); then
  echo "gpu-check: $PY cannot import torch ($(echo "$torch_error" | tail -1)); set PYTHON to the interpreter with a CUDA build of torch" >&2
  exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: no CUDA GPU: torch.cuda.is_available() is False for $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)). Nothing was built or run; run this on a GPU machine." >&2
  exit 2
fi
mkdir -p "$(dirname "$OUT")"

step() {  # step NAME TIMEOUT CMD...: run CMD under TIMEOUT seconds, log to $OUT.NAME.log; sets rc and secs
  local name=$1 limit=$2
  shift 2
  echo "gpu-check: $name (limit ${limit} s)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT.$name.log" 2>&1
  rc=$?
  secs=$((SECONDS - start))
  tail -n 3 "$OUT.$name.log"
  echo "gpu-check: $name: exit $rc after ${secs} s (log: $OUT.$name.log)"
}

step build "$BUILD_TIMEOUT" env MAX_JOBS="${GPU_CHECK_MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
  FORCE_CUDA=1 "$PY" setup.py build_ext --inplace
build_rc=$rc build_secs=$secs

step tests "$TEST_TIMEOUT" "$PY" -m pytest -m gpu tests -q -p no:cacheprovider --benchmark-disable \
  --junitxml="$OUT.tests.xml"
tests_rc=$rc tests_secs=$secs

"$PY" benchmarks/gpu_bench.py --device cuda --out "$OUT" \
  --build-exit "$build_rc" --build-seconds "$build_secs" --build-log "$OUT.build.log" \
  --tests-exit "$tests_rc" --tests-seconds "$tests_secs" --tests-junit "$OUT.tests.xml"
bench_rc=$?

echo "gpu-check: build exit $build_rc, tests exit $tests_rc, benchmark exit $bench_rc; report: $OUT.md"
[ "$build_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
