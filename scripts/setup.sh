#!/usr/bin/env bash
# Make .venv with s4mi (editable) and the pinned dependencies of requirements/constraints.txt.
# Idempotent: does nothing when .venv already matches setup.cfg and the constraints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.s4mi-setup
want=$(cat setup.cfg pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "s4mi: setting up .venv (first run takes about a minute)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c requirements/constraints.txt torch==2.13.0
# setuptools tells every editable install of a flat layout that a folder named like the package could shadow it
# (s4mi has none): that note only, not other warnings, is silenced
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
echo "s4mi: .venv ready"
