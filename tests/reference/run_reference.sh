#!/usr/bin/env bash
# Run Mariana's reference_dump on CONFIG and compare it against the PyTorch oracle.
#   run_reference.sh DUMP_TOOL CONFIG OUTDIR [CHECK_ARGS...]
# CHECK_ARGS go to check_reference.py (e.g. --routing-diversity 16).
# Exit status: check_reference.py's (0 pass, 1 mismatch/missing, 2 unreadable dump), or 1 when
# the dump tool fails or /usr/bin/python3 cannot import torch (this test never skips).
set -u
if [ "$#" -lt 3 ]; then
  echo "usage: $0 DUMP_TOOL CONFIG OUTDIR [CHECK_ARGS...]" >&2
  exit 2
fi
DUMP_TOOL=$1
CONFIG=$2
OUTDIR=$3
shift 3
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "FAIL: $PY cannot import torch and numpy (Debian python3-torch, python3-numpy);" \
       "run scripts/setup.sh to install them" >&2
  exit 1
fi

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR" || exit 1
echo "+ $DUMP_TOOL --config $CONFIG --seed 7 --batch 2 --seq 24 --mtp-weight 0.3 --balance-alpha 0.01 --out $OUTDIR"
"$DUMP_TOOL" --config "$CONFIG" --seed 7 --batch 2 --seq 24 --mtp-weight 0.3 --balance-alpha 0.01 \
  --out "$OUTDIR"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: reference_dump exited with status $rc" >&2
  exit 1
fi
echo "+ $PY $HERE/check_reference.py $OUTDIR $*"
exec "$PY" "$HERE/check_reference.py" "$OUTDIR" "$@"
