#!/usr/bin/env bash
# Provision what the browser tests (tests/browser, marker `browser`) need; idempotent, safe to re-run.
#
#   - Debian's chromium at /usr/bin/chromium (apt; ~45 s the first time)
#   - playwright-core (pinned) under $LUNE_ENV_DIR/node, used only to drive that system chromium
#     (no browser download: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)
#
# Called from .ci/provision.sh. Needs root for apt (as on CI and the dev machines) and node/npm on PATH.
set -euo pipefail

ENV_DIR="${LUNE_ENV_DIR:-$HOME/.cache/comfyui-lune}"
PLAYWRIGHT_CORE_VERSION="1.65.1"
NODE_DIR="$ENV_DIR/node"
log() { echo "[provision-browser] $*" >&2; }

if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs + npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

PKG="$NODE_DIR/node_modules/playwright-core/package.json"
if [ ! -f "$PKG" ] || ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$PKG"; then
  log "installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" \
    "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
fi
log "ready: chromium=$(/usr/bin/chromium --version 2>/dev/null | head -1) playwright-core=$PLAYWRIGHT_CORE_VERSION at $NODE_DIR"
