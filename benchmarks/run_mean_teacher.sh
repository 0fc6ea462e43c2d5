#!/usr/bin/env bash
# Mean Teacher at 10 % labels on the polyp and cxr phantoms, 3 seeds (issue: engine + Mean Teacher). Two runs at a
# time, one thread each, fit a 2-core machine. Finished runs are skipped, so a stopped script resumes.
# - polyp: the supervised runs it is compared with are benchmarks/results/supervised_polyp (run_supervised.sh):
#   same phantom, splits, epochs and optimisation steps.
# - cxr: the 3,300-image phantom (2,000 training images, 225 labelled at 10 %; 300 validation, 1,000 test), with
#   the supervised runs in the same grid; 22 steps an epoch for both (samples_per_epoch 700 in batches of 32).
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
$S4MI benchmark --task polyp --methods mean_teacher_polyp_segmentation --fractions 0.1 --seeds 0 1 2 --threads 1 \
    --jobs 2 --out benchmarks/results/mean_teacher_polyp_full_batches
[ -f benchmarks/data/cxr-n3300/datalist.json ] ||
    $S4MI data make cxr --n 3300 --splits 0.60606 0.09091 0.30303 --out benchmarks/data/cxr-n3300
MT="mean_teacher_cxr_classification:unsup_weight#_target_=s4mi.handlers.ramps.LinearRamp,consistency_rampup_epochs=15"
MT="$MT,epoch_length=22,train#strong_augmentation#2#prob=0,train#strong_augmentation#3#prob=0"
$S4MI benchmark --task benchmarks/data/cxr-n3300/datalist.json --methods "$MT" supervised_cxr_classification \
    --fractions 0.1 1.0 --seeds 0 1 2 --threads 1 --jobs 2 --set max_epochs=15 samples_per_epoch=700 \
    --out benchmarks/results/mean_teacher_cxr_n3300_full_batches
