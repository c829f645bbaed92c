#!/usr/bin/env bash
# Creates (or checks) a Python virtual environment with one pinned PyPI package, for the parts of
# Mariana that call a Python library: the HF tokenizers compatibility test and the math_verify
# reward scorer. Idempotent and safe to run concurrently (a lock file beside the venv).
#
# usage: scripts/pyenv.sh VENV_DIR REQUIREMENTS IMPORT_NAME
#   e.g. scripts/pyenv.sh build/pyenv-math-verify math-verify==0.9.0 math_verify
#   REQUIREMENTS may list several, space-separated, in one argument.
# The venv is made by Debian's /usr/bin/python3 with --system-site-packages (numpy and torch stay
# visible). Exit 0 when VENV_DIR/bin/python can import IMPORT_NAME afterwards, 1 otherwise.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 VENV_DIR REQUIREMENT IMPORT_NAME" >&2
  exit 2
fi
venv="$1"
requirement="$2"
module="$3"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $module" 2>/dev/null; then exit 0; fi
echo "pyenv: creating $venv with $requirement" >&2
/usr/bin/python3 -m venv --system-site-packages "$venv"
# shellcheck disable=SC2086  # several requirements in one argument
"$venv/bin/python" -m pip install -q --disable-pip-version-check $requirement >&2
if ! "$venv/bin/python" -c "import $module"; then
  echo "pyenv: $venv/bin/python still cannot import $module after installing $requirement" >&2
  exit 1
fi
