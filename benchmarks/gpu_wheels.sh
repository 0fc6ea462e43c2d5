#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with the wheels benchmarks/gpu_check.sh installs on the device machine, which has Python
# 3.12 and PyTorch but not MONAI, Ignite or fire and reaches no registry. Pure-Python wheels of the versions CI pins
# (a few MB together: carry .whl with the device tool). nibabel, pydicom and SimpleITK are left out: the check runs the
# PNG phantoms only.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
PIP=${PIP:-.venv/bin/python -m pip}
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
  -d .whl monai==1.6.1 pytorch-ignite==0.5.5 fire==0.7.1 termcolor==3.3.0
ls -la .whl
