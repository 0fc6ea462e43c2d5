#!/usr/bin/env bash
# Online pseudo-labelling with momentum teachers (METHODS.md section 4) on the polyp phantom at 20 % labels, 3 seeds:
# the paper's five runs plus the teacher at 100 % labels. One first stage (the teacher and its momentum copy) per
# (fraction, seed) is shared by every variant; `overlay=export_teacher` evaluates a first-stage teacher as it is.
# Two runs at a time, one thread each, fit a 2-core machine (about 50 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
B=online_pseudolabel_polyp_segmentation
.venv/bin/s4mi benchmark --task polyp --fractions 0.2 1.0 --seeds 0 1 2 --threads 1 --jobs 2 \
    --out benchmarks/results/online_pseudolabel_polyp --methods \
    "$B:overlay=export_teacher,teacher_source=teacher" \
    "$B:overlay=export_teacher,teacher_source=teacher_momentum" \
    "$B:online=false,teacher_source=teacher" \
    "$B:online=true,teacher_source=teacher" \
    "$B:online=false,teacher_source=teacher_momentum" \
    "$B:online=true,teacher_source=teacher_momentum" "$@"
