#!/usr/bin/env bash
# Creates (once) and activates .venv with the project installed. Sourced by the two top-level
# commands, so a fresh clone needs nothing done by hand.
#   - A machine that already has torch (a GPU box) keeps it: the venv sees system packages.
#   - A machine without torch gets the CPU build 2.13.0 (never the multi-GB CUDA wheel).
# Sourced, so it sets no shell options of its own (they would leak into the caller); every step
# that can fail is checked explicitly.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEGATRON_LTD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${MEGATRON_LTD_EXTRAS:-test}"

if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c "import torch" >/dev/null 2>&1; then
        echo "[setup] system torch found: creating $VENV with access to it"
        "$PY" -m venv --system-site-packages "$VENV" || { echo "[setup] venv creation failed" >&2; return 1; }
    else
        echo "[setup] creating $VENV"
        "$PY" -m venv "$VENV" || { echo "[setup] venv creation failed" >&2; return 1; }
    fi
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

STAMP="$VENV/.megatron-ltd-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ]; then
    if ! python -c "import torch" >/dev/null 2>&1; then
        echo "[setup] installing torch==2.13.0 (CPU build)"
        python -m pip install -q "torch==2.13.0" || { echo "[setup] torch install failed" >&2; return 1; }
    fi
    echo "[setup] installing megatron-ltd[$EXTRAS] (editable)"
    python -m pip install -q -e "$ROOT[$EXTRAS]" || { echo "[setup] pip install failed" >&2; return 1; }
    touch "$STAMP"
fi
cd "$ROOT" || return 1
