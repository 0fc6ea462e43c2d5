#!/usr/bin/env bash
# Make .venv-label: a separate environment with MONAI Label 0.8.5 and s4mi (editable, the [label] extra), pinned by
# requirements/label-constraints.txt. MONAI Label needs numpy<2, jsonschema<4, pydicom<3 and a torch+torchvision
# pair that imports, so it cannot share .venv. About 8 GB installed (torch 2.14.1 is a CUDA build; it runs on CPU).
# Idempotent: a second run returns at once when .venv-label already matches setup.cfg, the constraints and this
# script. Usage: bash scripts/setup_label.sh    (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-label
stamp=$VENV/.s4mi-setup
want=$(cat setup.cfg pyproject.toml requirements/label-constraints.txt scripts/setup_label.sh | sha256sum | cut -d' ' -f1)
start=$(date +%s)
if [ -x "$VENV/bin/monailabel" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "s4mi: $VENV is up to date ($(($(date +%s) - start)) s)"
    exit 0
fi
echo "s4mi: setting up $VENV (MONAI Label 0.8.5; the first run takes several minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q -c requirements/label-constraints.txt)
"$VENV/bin/python" -m pip install -q --upgrade pip
"${pip[@]}" torch torchvision
"${pip[@]}" -e ".[label]"
# the server's imports, checked here rather than at its start: torchvision, the bundle tasks, the sample app
"$VENV/bin/python" - <<'PY'
import torchvision  # noqa: F401  (MONAI Label's post transforms import it)
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401

import s4mi.label

app = s4mi.label.sample_app_dir("monaibundle")
print(f"s4mi: monaibundle sample app at {app}")
PY
echo "$want" > "$stamp"
echo "s4mi: $VENV ready ($(($(date +%s) - start)) s)"
