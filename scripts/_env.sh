# Shared by scripts/demo and scripts/test: create .venv with Python >= 3.11 and install kvio.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "kvio needs Python 3.11 or newer on PATH (or set PYTHON=...)" >&2; exit 1; }
VENV="${KVIO_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo ">> creating virtual environment $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
echo ">> installing kvio and its dependencies into $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# kvio[all] is what users get; scripts/test adds dev (test, benchmark, lint and type tools).
"$VENV/bin/python" -m pip install --quiet -c "$ROOT/scripts/constraints.txt" -e "$ROOT[${KVIO_EXTRAS:-all}]"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
