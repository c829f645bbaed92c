#!/usr/bin/env bash
# GPU check: builds the CUDA backend for sm_90 (H100/H200) in build-gpu/, runs the `gpu`-labelled
# tests (CUDA vs CPU parity; NCCL between forked ranks, one device per rank) and bench_cuda, and
# prints a short summary table last.
# Run from anywhere on a machine with a GPU; exits non-zero if the build or any test fails.
# Builds only test_cuda, test_nccl and bench_cuda (what the check runs); GPU_CHECK_BUILD_ALL=1
# builds all. Skipped tests (no usable device) fail the check unless GPU_CHECK_ALLOW_SKIP=1, except
# NCCL tests that need more GPUs than the machine has (a group of n ranks needs n devices);
# GPU_CHECK_SKIP_SETUP=1 skips scripts/setup.sh.
# Takes about 2 minutes on 16 cores; every step has a timeout so the whole stays under 8.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-gpu"
JOBS="$(nproc)"
LOG="$BUILD/gpu-check"
cd "$ROOT"

# Packages: setup.sh is a no-op when everything is installed; it only reaches for apt when
# something is missing. A machine without network may lack optional packages (e.g. torch), so a
# failure here is reported and the build tried anyway.
if [ "${GPU_CHECK_SKIP_SETUP:-0}" != "1" ]; then
  "$ROOT/scripts/setup.sh" || echo "gpu-check: scripts/setup.sh failed; trying the build anyway" >&2
fi

GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
# A build dir configured with another generator cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && [ ${#GENERATOR[@]} -gt 0 ] &&
   ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi

echo "gpu-check: configure ($BUILD)"
timeout 300 cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DMARIANA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90
mkdir -p "$LOG"

TARGETS=(--target test_cuda test_nccl bench_cuda)
if [ "${GPU_CHECK_BUILD_ALL:-0}" = "1" ]; then TARGETS=(); fi
echo "gpu-check: build (-j$JOBS)"
timeout 360 cmake --build "$BUILD" "${TARGETS[@]}" -j"$JOBS"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

echo "gpu-check: ctest -L gpu"
set +e
(cd "$BUILD" && timeout 240 ctest -L gpu --output-on-failure --timeout 120 -j4) 2>&1 | tee "$LOG/ctest.log"
CTEST_RC=${PIPESTATUS[0]}
echo "gpu-check: bench_cuda"
timeout 180 "$BUILD/bench/bench_cuda" 2>&1 | tee "$LOG/bench.log"
BENCH_RC=${PIPESTATUS[0]}
set -e

count() { grep -cE "$1" "$LOG/ctest.log" || true; }
PASSED=$(count 'Test +#[0-9]+: .* Passed')
FAILED=$(count '\*\*\*(Failed|Exception|Timeout)|Not Run')
SKIPPED=$(count '\*\*\*Skipped')
NCCL_SKIPPED=$(count 'Nccl.*\*\*\*Skipped')
NCCL_TOTAL=$(count 'Test +#[0-9]+: .*Nccl')
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
TOTAL=$(count 'Test +#[0-9]+: ')

echo
echo "==================== gpu-check summary ===================="
printf '%-10s %s\n' "tests" "$TOTAL run: $PASSED passed, $FAILED failed, $SKIPPED skipped (ctest rc $CTEST_RC)"
if [ "$TOTAL" -eq 0 ]; then printf '%-10s %s\n' "" "no gpu-labelled tests ran"; fi
printf '%-10s %s\n' "nccl" "$NCCL_TOTAL NCCL tests, $NCCL_SKIPPED skipped ($GPUS GPUs here; a group of n ranks needs n GPUs, so multi-rank tests skip on one GPU)"
if [ "$SKIPPED" -gt "$NCCL_SKIPPED" ]; then printf '%-10s %s\n' "" "other skips mean the device was not usable"; fi
while IFS= read -r line; do printf '%-10s %s\n' "bench" "$line"; done \
  < <(grep -E '^(device|sgemm|rmsnorm|no usable)' "$LOG/bench.log" || true)
printf '%-10s %s\n' "bench rc" "$BENCH_RC"
echo "==========================================================="

if [ "$CTEST_RC" -ne 0 ] || [ "$FAILED" -ne 0 ] || [ "$TOTAL" -eq 0 ] || [ "$BENCH_RC" -ne 0 ]; then
  exit 1
fi
# Skipped tests pass in ctest, but on a GPU check they mean nothing was checked (NCCL tests that
# need more GPUs than this machine has are expected to skip).
if [ "$((SKIPPED - NCCL_SKIPPED))" -gt 0 ] && [ "${GPU_CHECK_ALLOW_SKIP:-0}" != "1" ]; then
  exit 1
fi
