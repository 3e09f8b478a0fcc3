#!/bin/sh
# Makes .tools/bin/uv available: the uv on PATH if there is one, else uv installed with pip
# (in a private virtual environment when python3 has venv, else into .tools/pip).
set -eu
PYTHON=${PYTHON:-python3}
mkdir -p .tools/bin
if command -v uv >/dev/null 2>&1; then
    ln -sf "$(command -v uv)" .tools/bin/uv
elif "$PYTHON" -m venv .tools/venv >/dev/null 2>&1 && .tools/venv/bin/python -m pip --version >/dev/null 2>&1; then
    .tools/venv/bin/python -m pip install --quiet uv
    ln -sf ../venv/bin/uv .tools/bin/uv
else
    rm -rf .tools/venv
    "$PYTHON" -m pip install --quiet --target .tools/pip uv ||
        "$PYTHON" -m pip install --quiet --break-system-packages --target .tools/pip uv
    ln -sf ../pip/bin/uv .tools/bin/uv
fi
.tools/bin/uv --version
