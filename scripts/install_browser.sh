#!/usr/bin/env bash
# A headless Chromium for the explorer's browser test (tests/analysis/test_explorer.py), from the system
# packages. Idempotent: does nothing when a Chromium is already on PATH.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "browser: $(command -v "$name")"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
command -v chromium
