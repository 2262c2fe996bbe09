#!/usr/bin/env bash
# CI: make sure headless Chromium and its chromedriver are present for tests/integration/test_inspect.py
# (Debian packages, no browser download at test time). Needs root and the Debian package registry.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser: chromium/chromedriver missing and not root; run: apt-get install chromium chromium-driver" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver
chromium --version && chromedriver --version
