#!/usr/bin/env bash
# Creates (once) and activates .venv with the project installed at the pinned versions. Sourced by
# the two top-level commands, so a fresh clone needs nothing done by hand.
#   - Every dependency but torch comes from constraints.txt (exact versions), so a new release
#     elsewhere cannot change what the tests run against.
#   - A machine that already has torch (a GPU box) keeps it: the venv sees system packages.
#   - A machine without torch gets the CPU build 2.13.0 (never the multi-GB CUDA wheel), its own
#     dependencies pinned by scripts/torch-cpu-constraints.txt.
#   - It reinstalls when setup.py, a constraints file or the extras change.
# Environment: MEGATRON_LTD_VENV (default .venv), MEGATRON_LTD_EXTRAS (default test,hf), PYTHON.
# Sourced, so it sets no shell options of its own (they would leak into the caller); every step
# that can fail is checked explicitly.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEGATRON_LTD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${MEGATRON_LTD_EXTRAS:-test,hf}"
CONSTRAINTS="$ROOT/constraints.txt"
TORCH_CONSTRAINTS="$ROOT/scripts/torch-cpu-constraints.txt"

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

# What the installed environment was built from; a change to any of it means reinstall.
WANT="$(cat "$ROOT/setup.py" "$CONSTRAINTS" "$TORCH_CONSTRAINTS" | python -c \
    "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())") extras=$EXTRAS" \
    || { echo "[setup] cannot read setup.py / constraints files" >&2; return 1; }
STAMP="$VENV/.megatron-ltd-installed"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    if ! python -c "import torch" >/dev/null 2>&1; then
        # Triton comes with it: its interpreter (TRITON_INTERPRET=1) runs the fused random-LTD
        # kernels on CPU, so the tests check them against the torch ops. A GPU box keeps the
        # Triton its own torch brought.
        echo "[setup] installing torch==2.13.0 (CPU build) and triton (for its CPU interpreter)"
        python -m pip install -q -c "$TORCH_CONSTRAINTS" "torch==2.13.0" triton \
            || { echo "[setup] torch install failed" >&2; return 1; }
    fi
    echo "[setup] installing megatron-ltd[$EXTRAS] (editable) at the versions in constraints.txt"
    python -m pip install -q -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]" \
        || { echo "[setup] pip install failed" >&2; return 1; }
    echo "$WANT" > "$STAMP"
fi
# Lets tests check that what is installed is what is pinned.
export MEGATRON_LTD_PINNED_ENV=1
cd "$ROOT" || return 1
