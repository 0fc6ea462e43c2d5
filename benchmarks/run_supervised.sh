#!/usr/bin/env bash
# Supervised baselines at 10 % and 100 % labels on the cxr, skin and polyp phantoms, 3 seeds (issue: foundation).
# Equal optimisation steps at both fractions (samples_per_epoch = full training-set size). About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
$S4MI benchmark --task polyp --fractions 0.1 1.0 --seeds 0 1 2 --set max_epochs=20 --out benchmarks/results/supervised_polyp
$S4MI benchmark --task cxr --fractions 0.1 1.0 --seeds 0 1 2 --set max_epochs=15 --out benchmarks/results/supervised_cxr
$S4MI benchmark --task skin --fractions 0.1 1.0 --seeds 0 1 2 --set max_epochs=15 --out benchmarks/results/supervised_skin
