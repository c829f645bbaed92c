# Sourced by the run_*.sh scripts (each `run_X.sh TOOL CONFIG OUTDIR [ARGS...]`): PY, the Python
# with the PyTorch oracle, and reference_setup, which reads the arguments and prepares OUTDIR.

PY=/usr/bin/python3

# reference_setup TOOL_NAME "$@": sets TOOL, CONFIG, OUT from the first three arguments and the
# array EXTRA to the rest (usage, exit 2 with fewer than three); fails the test (exit 1, never a
# skip) when $PY cannot import torch and numpy; leaves OUT an empty directory.
reference_setup() {
  local tool_name=$1
  shift
  if [ "$#" -lt 3 ]; then
    echo "usage: $0 $tool_name CONFIG OUTDIR [ARGS...]" >&2
    exit 2
  fi
  TOOL=$1
  CONFIG=$2
  OUT=$3
  shift 3
  EXTRA=("$@")
  if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "FAIL: $PY cannot import torch and numpy (Debian python3-torch, python3-numpy);" \
         "run scripts/setup.sh to install them" >&2
    exit 1
  fi
  rm -rf "$OUT"
  mkdir -p "$OUT" || exit 1
}
