#!/usr/bin/env bash
# Install deepobfuscator and its test/deploy extras into the active Python environment.
# The CPU build of torch is installed first (set TORCH_SPEC to choose another, e.g. a CUDA build);
# the package itself declares a normal torch range so GPU users keep their own build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install --upgrade pip >/dev/null
"$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
"$PY" -m pip install -e ".[dev]"
