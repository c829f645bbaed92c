#!/usr/bin/env bash
# Configures and builds Mariana in build/ (Release, Ninja, ccache). CUDA is built when nvcc is
# found (MARIANA_CUDA=AUTO); set MARIANA_CUDA=OFF to skip it. Used by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMARIANA_CUDA="${MARIANA_CUDA:-AUTO}" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
