#!/usr/bin/env bash
# Install metabook, the book toolchain and the test tools into the current Python.
# Keeps an already installed torch (>=2.1); on a bare machine installs torch 2.13.0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-python3}
if ! "$py" -c "import torch" 2>/dev/null; then
    "$py" -m pip install torch==2.13.0
fi
"$py" -m pip install -r requirements.txt
"$py" -m pip install --no-deps -e .
# Headless Chromium (browser test) and npm (vendored MathJax/widget scripts), on Debian/Ubuntu.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if (( ${#missing[@]} )) && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y "${missing[@]}" fonts-wqy-zenhei >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" fonts-wqy-zenhei >/dev/null; }
fi
