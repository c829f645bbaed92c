#!/usr/bin/env bash
# The whole test suite: set up, build, run every test (unit, PyTorch reference, GPU tests that skip
# without a device). Extra arguments go to ctest (e.g. -L unit, -R Checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
