#!/usr/bin/env bash
# Run Mariana's reference_dump on CONFIG and compare it against the PyTorch oracle.
#   run_reference.sh DUMP_TOOL CONFIG OUTDIR [CHECK_ARGS...]
# CHECK_ARGS go to check_reference.py (e.g. --routing-diversity 16).
# Exit status: check_reference.py's (0 pass, 1 mismatch/missing, 2 unreadable dump), or 1 when
# the dump tool fails or /usr/bin/python3 cannot import torch (this test never skips).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
reference_setup DUMP_TOOL "$@"
echo "+ $TOOL --config $CONFIG --seed 7 --batch 2 --seq 24 --mtp-weight 0.3 --balance-alpha 0.01 --out $OUT"
"$TOOL" --config "$CONFIG" --seed 7 --batch 2 --seq 24 --mtp-weight 0.3 --balance-alpha 0.01 --out "$OUT"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: reference_dump exited with status $rc" >&2
  exit 1
fi
echo "+ $PY $HERE/check_reference.py $OUT ${EXTRA[*]}"
exec "$PY" "$HERE/check_reference.py" "$OUT" "${EXTRA[@]}"
