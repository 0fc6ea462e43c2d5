#!/usr/bin/env bash
# Mean Teacher at 10 % labels on the polyp and cxr phantoms, 3 seeds (issue: engine + Mean Teacher). The supervised
# runs it is compared with are benchmarks/results/supervised_{polyp,cxr} (run_supervised.sh): same phantom, splits,
# epochs and optimisation steps. Two runs at a time, one thread each, fit a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
$S4MI benchmark --task polyp --methods mean_teacher_polyp_segmentation --fractions 0.1 --seeds 0 1 2 --threads 1 \
    --jobs 2 --out benchmarks/results/mean_teacher_polyp
$S4MI benchmark --task cxr --methods mean_teacher_cxr_classification --fractions 0.1 --seeds 0 1 2 --threads 1 \
    --jobs 2 --set max_epochs=15 --out benchmarks/results/mean_teacher_cxr
